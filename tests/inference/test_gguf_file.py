"""``gguf_file.read_gguf`` against the ``gguf`` package's own ``GGUFReader`` on one file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blocks.core.errors import Corruption
from blocks.inference.gguf_file import read_gguf

gguf = pytest.importorskip("gguf")


def write_file(path: Path) -> Path:
    """Every value type the loader reads, arrays of strings and numbers, and tensors of a
    plain and a quantized type."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_float32("llama.rope.freq_base", 10000.5)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_string("tokenizer.chat_template", "{{ messages }} é")
    writer.add_token_list(["a", "Ġthe", "<|im_end|>", "日本"])
    writer.add_token_scores([0.5, -1.0, 2.0, 0.0])
    writer.add_token_types([1, 1, 3, 1])
    writer.add_int64("x.int64", -(1 << 40))
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((4, 32), dtype=np.float32))
    weights = rng.standard_normal((2, 64)).astype(np.float32)
    quantized = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_fields_and_tensors_equal_the_gguf_packages_reader(tmp_path: Path) -> None:
    path = write_file(tmp_path / "f.gguf")
    ours, reference = read_gguf(path), gguf.GGUFReader(str(path))
    want = {k: f.contents() for k, f in reference.fields.items() if not k.startswith("GGUF.")}
    assert ours.fields == want
    assert ours.fields["tokenizer.ggml.tokens"] == ["a", "Ġthe", "<|im_end|>", "日本"]
    assert [t.name for t in ours.tensors] == [t.name for t in reference.tensors]
    for got, expected in zip(ours.tensors, reference.tensors, strict=True):
        assert got.shape == tuple(int(d) for d in expected.shape)
        assert got.tensor_type == int(expected.tensor_type)
        raw = np.ascontiguousarray(expected.data).reshape(-1).view(np.uint8)
        assert np.array_equal(got.data, raw)


def test_a_truncated_or_foreign_file_is_corruption(tmp_path: Path) -> None:
    whole = write_file(tmp_path / "f.gguf").read_bytes()
    for name, data in [
        ("empty", b""),
        ("magic", b"GGML" + whole[4:]),
        ("header", whole[:200]),
        ("tensors", whole[:-40]),
    ]:
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        with pytest.raises(Corruption):
            read_gguf(path)
