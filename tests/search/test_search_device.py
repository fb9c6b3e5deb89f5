"""``blocks search serve --device``: cpu serves, cuda without a GPU is refused at start-up.

The refusal is one ``error: ...`` line and exit code 2 (``ExitCode.USAGE``), raised before any
port is bound or index built: never a silent fallback to the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import blocks.search.faiss_index as faiss_index
from blocks.cli import main
from blocks.cli_errors import ExitCode
from blocks.core.errors import InvalidArgument
from blocks.search.exact import ExactIndex
from blocks.search.faiss_index import FaissIndex
from blocks.search.service import make_vector_index

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def serve(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["search", "serve", "--dim", "4", "--listen", "127.0.0.1:0", *extra])
    return code, capsys.readouterr().err


@no_cuda
@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_serve_device_cuda_without_cuda_is_refused(
    capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    code, err = serve(capsys, "--kind", kind, "--spec", "Flat", "--device", "cuda")
    assert code == ExitCode.USAGE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "cuda" in lines[0] and "no CUDA device" in lines[0]


def test_serve_device_cuda_with_faiss_lacking_gpu_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(faiss_index, "faiss_has_gpu", lambda: False)
    code, err = serve(capsys, "--kind", "faiss", "--spec", "Flat", "--device", "cuda")
    assert code == ExitCode.USAGE
    assert err.strip().splitlines()[0].startswith("error: ")
    assert "faiss has no GPU support" in err


def test_serve_device_cuda_on_a_coordinator_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = serve(capsys, "--remote-shards", "127.0.0.1:1", "--device", "cuda")
    assert code == ExitCode.USAGE
    assert "coordinator holds no index" in err


def test_serve_device_defaults_to_cpu() -> None:
    from blocks.cli import build_parser

    args = build_parser(only="search").parse_args(["search", "serve"])
    assert args.device == "cpu"


@no_cuda
@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_make_vector_index_cuda_without_gpu_raises(kind: str) -> None:
    with pytest.raises(InvalidArgument, match="cuda"):
        make_vector_index(4, "l2", kind=kind, device="cuda")


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_make_vector_index_on_cpu_searches(kind: str) -> None:
    index = make_vector_index(4, "l2", kind=kind, spec="Flat", device="cpu")
    if isinstance(index, ExactIndex):
        assert index.device.type == "cpu"
    else:
        assert isinstance(index, FaissIndex)
    vectors = np.eye(4, dtype=np.float32)
    index.add(np.arange(4), vectors)
    result = index.search(vectors[2:3], 1)
    assert int(result.ids[0][0]) == 2
