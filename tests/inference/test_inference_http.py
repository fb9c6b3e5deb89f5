"""The HTTP request parser: whole, byte by byte, with trailing data, and fuzzed."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.inference import openai_api as oa
from blocks.inference.http import HttpError, parse_head, read_request

REQUEST = (
    b"POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    b'X-Twice: 1\r\nx-twice: 2\r\nContent-Length: 13\r\n\r\n{"prompt": 1}'
)


def read_all(chunks: list[bytes]) -> list[object]:
    async def go() -> list[object]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        out: list[object] = []
        while True:
            try:
                request = await read_request(reader)
            except HttpError as error:
                out.append(error.status)
                return out
            if request is None:
                return out
            out.append((request.head.method, request.head.path, request.head.headers, request.body))

    return asyncio.run(go())


def test_whole_and_byte_by_byte_agree() -> None:
    whole = read_all([REQUEST])
    assert whole == [
        (
            "POST",
            "/v1/completions",
            {
                "host": "a",
                "content-type": "application/json",
                "x-twice": "1, 2",
                "content-length": "13",
            },
            b'{"prompt": 1}',
        )
    ]
    assert read_all([REQUEST[i : i + 1] for i in range(len(REQUEST))]) == whole


def test_keep_alive_sequence_and_trailing_garbage() -> None:
    two = read_all([REQUEST + REQUEST])
    assert len(two) == 2 and two[0] == two[1]
    assert read_all([REQUEST + b"GET / HTTP/1.1\r\n"]) == [*read_all([REQUEST]), 400]
    with pytest.raises(HttpError):
        parse_head(b"GET / HTTP/1.1\r\n\r\nextra")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /\r\n\r\n", 400),
        (b"BREW / HTTP/1.1\r\n\r\n", 405),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET x HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nbad name: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 65 + b"\r\n", 431),
    ],
)
def test_bad_heads(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(raw)
    assert info.value.status == status


def test_bad_bodies() -> None:
    assert read_all([b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"]) == [400]
    assert read_all([b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"]) == [413]
    assert read_all([b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]) == [411]
    assert read_all([b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"]) == [400]
    assert read_all([b"GET / HT"]) == [400]
    assert read_all([]) == []


@given(st.binary(max_size=300))
def test_fuzzed_heads_only_raise_http_errors(data: bytes) -> None:
    with contextlib.suppress(HttpError):
        parse_head(data)
    read_all([data])  # never raises anything else


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    )
)
def test_fuzzed_openai_bodies_only_raise_api_errors(body: object) -> None:
    for parse in (oa.parse_completion, lambda b: oa.parse_chat(b)):
        try:
            parse(body)
        except oa.ApiError as error:
            assert error.status == 400


def test_openai_parsing() -> None:
    messages, parsed = oa.parse_chat(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "max_completion_tokens": 5,
            "temperature": 0,
            "stop": "\n",
            "stream": True,
            "stream_options": {"include_usage": True},
            "logprobs": True,
            "top_logprobs": 2,
        }
    )
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert parsed.params.max_tokens == 5 and parsed.params.stop == ("\n",) and parsed.params.greedy
    assert parsed.stream and parsed.include_usage and parsed.top_logprobs == 2
    assert oa.parse_completion({"prompt": [1, 2, 3]}).prompt == [1, 2, 3]
    for bad in (
        {"prompt": ""},
        {"prompt": [True]},
        {"prompt": "x", "n": 99},
        {"prompt": "x", "top_p": 0},
        {"prompt": "x", "stop": [1]},
    ):
        with pytest.raises(oa.ApiError):
            oa.parse_completion(bad)
