"""``/v1/embeddings`` through the official client, against a real
``blocks inference serve --model tiny-random`` process.

The vector is the served model's final hidden states, mean-pooled over the input's tokens
and L2-normalised (``blocks.inference.embeddings``); the test rebuilds the same seeded model
in-process and checks the served vectors against it. ``tiny-random`` uses the character
tokenizer (one token per character), so token counts are lengths. One shared client
(``max_retries=0``, reused connections) of the session's shared server (``conftest.tiny_served``).
"""

from __future__ import annotations

import math

import pytest
from tiny_server import MAX_MODEL_LEN, TinyServed

from blocks.inference.embeddings import MAX_EMBEDDING_INPUTS, embed_tokens
from blocks.inference.factory import tiny_random_model
from blocks.inference.tokenizer import CharTokenizer

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.process

WIDTH = 32  # tiny-random's hidden size
TEXTS = ["The quick brown fox", "jumps over", "the lazy dog"]


Served = TinyServed


@pytest.fixture
def served(tiny_served: TinyServed) -> TinyServed:
    """The session's shared tiny-random server (``conftest.tiny_served``)."""
    return tiny_served


def expected(text: str) -> list[float]:
    """The vector computed in-process from the same seeded model."""
    model = tiny_random_model()
    return [float(v) for v in embed_tokens(model, CharTokenizer().encode(text)).tolist()]


def test_a_string_gets_the_served_models_mean_pooled_unit_vector(served: Served) -> None:
    reply = served.client.embeddings.create(
        model="tiny-random", input=TEXTS[0], encoding_format="float"
    )
    assert reply.object == "list" and reply.model == "tiny-random"
    [item] = reply.data
    assert item.index == 0 and len(item.embedding) == WIDTH
    assert math.sqrt(sum(v * v for v in item.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert item.embedding == pytest.approx(expected(TEXTS[0]), abs=1e-5)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == len(TEXTS[0])


def test_base64_the_clients_default_equals_float_for_a_list_in_order(served: Served) -> None:
    as_base64 = served.client.embeddings.create(model="tiny-random", input=TEXTS)
    as_float = served.client.embeddings.create(
        model="tiny-random", input=TEXTS, encoding_format="float"
    )
    assert [d.index for d in as_base64.data] == [0, 1, 2]
    for b, f, text in zip(as_base64.data, as_float.data, TEXTS, strict=True):
        assert b.embedding == pytest.approx(f.embedding, abs=1e-6)
        assert f.embedding == pytest.approx(expected(text), abs=1e-5)  # each alone
    assert as_base64.data[0].embedding != pytest.approx(as_base64.data[1].embedding, abs=1e-3)
    assert as_float.usage.prompt_tokens == sum(map(len, TEXTS))


def test_token_id_inputs_equal_their_text(served: Served) -> None:
    ids = CharTokenizer().encode(TEXTS[1])
    one = served.client.embeddings.create(model="tiny-random", input=ids, encoding_format="float")
    many = served.client.embeddings.create(
        model="tiny-random", input=[ids, CharTokenizer().encode(TEXTS[2])]
    )
    assert one.data[0].embedding == pytest.approx(expected(TEXTS[1]), abs=1e-5)
    assert many.data[1].embedding == pytest.approx(expected(TEXTS[2]), abs=1e-5)
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.embeddings.create(model="tiny-random", input=[96])  # past the vocabulary
    assert caught.value.body["param"] == "input"


def test_dimensions_only_the_models_width(served: Served) -> None:
    same = served.client.embeddings.create(model="tiny-random", input="a", dimensions=WIDTH)
    assert len(same.data[0].embedding) == WIDTH
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.embeddings.create(model="tiny-random", input="a", dimensions=8)
    assert caught.value.body["param"] == "dimensions"
    assert caught.value.body["code"] == "unsupported_parameter"


def test_bounds_and_bad_input_are_400s_naming_the_limit(served: Served) -> None:
    create = served.client.embeddings.create
    with pytest.raises(openai.BadRequestError) as caught:
        create(model="tiny-random", input=["a"] * (MAX_EMBEDDING_INPUTS + 1))
    assert str(MAX_EMBEDDING_INPUTS) in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        create(model="tiny-random", input="x" * (MAX_MODEL_LEN + 1))
    assert str(MAX_MODEL_LEN) in caught.value.body["message"]
    assert caught.value.body["param"] == "input"
    assert len(create(model="tiny-random", input="x" * MAX_MODEL_LEN).data) == 1  # at the bound
    for bad in ("", [], [""], [1.5], [["a"]]):
        with pytest.raises(openai.BadRequestError) as caught:
            create(model="tiny-random", input=bad)
        assert caught.value.body["param"] == "input", bad
    with pytest.raises(openai.BadRequestError) as caught:
        create(model="tiny-random", input="a", encoding_format="int8")
    assert caught.value.body["param"] == "encoding_format"
    with pytest.raises(openai.NotFoundError) as missing:
        create(model="gpt-4", input="a")
    assert missing.value.body["code"] == "model_not_found"


def test_embeddings_and_generation_share_the_connection(served: Served) -> None:
    for _ in range(3):
        stream = served.client.chat.completions.create(
            model="tiny-random",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            stream=True,
        )
        assert list(stream)
        reply = served.client.embeddings.create(model="tiny-random", input=TEXTS[0])
        assert reply.data[0].embedding == pytest.approx(expected(TEXTS[0]), abs=1e-5)
