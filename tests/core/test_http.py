"""The shared request-head parser: round trips, every refusal's status, bounds, fuzzing.

Both serving blocks' rules are exercised: the statuses each answered before the parser moved
to core are written out here case by case, so a change to either is a visible test change.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.blob.s3 import http as s3_http
from blocks.core.http import (
    REASONS,
    HeadRules,
    HttpError,
    RequestHead,
    parse_head,
    render_head,
)
from blocks.inference import http as inference_http

RULES = HeadRules(methods=frozenset({"GET", "PUT", "POST"}), head_bytes_max=4096, headers_max=16)

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=12,
)
PATH_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/%._-~", max_size=20)
# A value: visible latin-1 text with inner spaces, no CR/LF, no outer whitespace.
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.just(" "), max_size=20
).map(str.strip)


@st.composite
def heads(draw: st.DrawFn) -> tuple[str, str, str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(sorted(RULES.methods)))
    raw_path = "/" + draw(PATH_TEXT)
    raw_query = draw(st.one_of(st.just(""), PATH_TEXT.map(lambda text: text.replace("/", "="))))
    version = draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
    names = draw(st.lists(TOKEN, max_size=8, unique_by=str.lower))
    headers = {name: draw(VALUE) for name in names}
    target = raw_path + (f"?{raw_query}" if raw_query else "")
    lines = [f"{method} {target} {version}"] + [
        f"{k}:{' ' * (len(k) % 3)}{v}" for k, v in headers.items()
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return method, raw_path, raw_query, version, headers, data


@given(heads())
def test_valid_heads_round_trip(case: tuple[str, str, str, str, dict[str, str], bytes]) -> None:
    method, raw_path, raw_query, version, headers, data = case
    head = parse_head(data, RULES)
    assert head == RequestHead(
        method, raw_path, raw_query, version, {k.lower(): v for k, v in headers.items()}
    )
    assert type(head) is RequestHead


@given(heads())
def test_every_proper_prefix_and_any_trailing_byte_is_refused(
    case: tuple[str, str, str, str, dict[str, str], bytes],
) -> None:
    """Parsed whole, byte by byte and with trailing data: only the exact head parses, so a
    server that hands the parser more or less than one head finds out."""
    data = case[-1]
    for end in range(len(data)):
        with pytest.raises(HttpError) as info:
            parse_head(data[:end], RULES)
        assert info.value.status == 400
    for trailing in (b"G", b"\r\n", b"GET / HTTP/1.1\r\n\r\n"):
        with pytest.raises(HttpError):
            parse_head(data + trailing, RULES)


def test_repeated_headers_join_with_the_rules_separator_and_values_strip() -> None:
    data = b"GET /a%20b?q=1 HTTP/1.1\r\nX-A: 1\r\nx-a:\t2 \r\nHost:h\r\n\r\n"
    head = parse_head(data, RULES)
    assert head.headers == {"x-a": "1, 2", "host": "h"}
    assert (head.raw_path, head.path, head.raw_query) == ("/a%20b", "/a b", "q=1")
    assert s3_http.parse_head(data).headers["x-a"] == "1,2"
    # The S3 rules strip only spaces and tabs; the inference rules all whitespace.
    odd = b"GET / HTTP/1.1\r\nX: \x0bv\x85\r\n\r\n"
    assert s3_http.parse_head(odd).headers["x"] == "\x0bv\x85"
    assert inference_http.parse_head(odd).headers["x"] == "v"


def test_inference_heads_keep_the_path_as_sent() -> None:
    head = inference_http.parse_head(b"POST /v1/a%2Fb?x=1 HTTP/1.1\r\n\r\n")
    assert isinstance(head, RequestHead) and head.path == "/v1/a%2Fb"
    assert s3_http.parse_head(b"GET /b/a%2Fb HTTP/1.1\r\n\r\n").path == "/b/a/b"


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.1", "keep-alive", True),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
        ("HTTP/1.0", "Keep-Alive", True),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep_alive: bool) -> None:
    extra = f"Connection: {connection}\r\n" if connection else ""
    head = parse_head(f"GET / {version}\r\n{extra}\r\n".encode(), RULES)
    assert head.keep_alive is keep_alive


BIG_HEAD = b"GET / HTTP/1.1\r\nX: " + b"a" * (64 * 1024) + b"\r\n\r\n"
MANY_HEADERS = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 201 + b"\r\n"
SOME_HEADERS = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 65 + b"\r\n"

# (head, S3 status, inference status, inference reason): what each block answered before.
MALFORMED = [
    (b"", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\n\r\nX", 400, 400, "malformed_request"),
    (b"GET /  HTTP/1.1\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1 x\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET/ HTTP/1.1\r\n\r\n", 400, 400, "malformed_request"),
    (b"BREW / HTTP/1.1\r\n\r\n", 405, 405, "method_not_allowed"),
    (b"PATCH / HTTP/1.1\r\n\r\n", 405, None, None),
    (b"get / HTTP/1.1\r\n\r\n", 400, 405, "method_not_allowed"),
    (b"G3T / HTTP/1.1\r\n\r\n", 400, 405, "method_not_allowed"),
    (b"GET / HTTP/2.0\r\n\r\n", 400, 505, "malformed_request"),
    (b"GET / http/1.1\r\n\r\n", 400, 505, "malformed_request"),
    (b"GET * HTTP/1.1\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET http://h/ HTTP/1.1\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\n: v\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\nX Y: v\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\nX\t: v\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\n X: v\r\n\r\n", 400, 400, "malformed_request"),
    (b"GET / HTTP/1.1\r\n\r\n\r\n", 400, 400, "malformed_request"),
    (BIG_HEAD, 400, 431, "head_too_large"),
    (MANY_HEADERS, 400, 431, "head_too_large"),
    (SOME_HEADERS, None, 431, "head_too_large"),
]


@pytest.mark.parametrize(("data", "s3_status", "inference_status", "reason"), MALFORMED)
def test_malformed_heads_get_each_blocks_status(
    data: bytes, s3_status: int | None, inference_status: int | None, reason: str | None
) -> None:
    if s3_status is None:
        s3_http.parse_head(data)
    else:
        with pytest.raises(HttpError) as info:
            s3_http.parse_head(data)
        assert (info.value.status, info.value.code) == (s3_status, None)
    if inference_status is None:
        inference_http.parse_head(data)
    else:
        with pytest.raises(HttpError) as info:
            inference_http.parse_head(data)
        assert (info.value.status, info.value.reason) == (inference_status, reason)


def test_default_rules_answer_with_rfc_statuses() -> None:
    rules = HeadRules(
        methods=frozenset({"GET"}), head_bytes_max=64, headers_max=1, line_bytes_max=24
    )
    cases = [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 60 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nA: " + b"a" * 30 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n\r\n", 431),
        (b"PUT / HTTP/1.1\r\n\r\n", 405),
        (b"p-t / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/3\r\n\r\n", 505),
    ]
    for data, status in cases:
        with pytest.raises(HttpError) as info:
            parse_head(data, rules)
        assert info.value.status == status, data
    assert parse_head(b"GET / HTTP/1.1\r\nA: " + b"a" * 21 + b"\r\n\r\n", rules).headers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head_bytes_max": 3},
        {"headers_max": -1},
        {"line_bytes_max": 0},
        {"methods": frozenset()},
    ],
)
def test_rules_validate_when_built(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"methods": frozenset({"GET"}), "head_bytes_max": 64}
    fields |= {"headers_max": 4} | kwargs
    with pytest.raises(ValueError):
        HeadRules(**fields)  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_fuzzed_bytes_only_ever_raise_http_error(data: bytes) -> None:
    for parse in (
        lambda raw: parse_head(raw, RULES),
        s3_http.parse_head,
        inference_http.parse_head,
    ):
        try:
            head = parse(data)
        except HttpError as error:
            assert 400 <= error.status < 600
        else:
            assert data.endswith(b"\r\n\r\n") and head.raw_path.startswith("/")


@given(st.binary(max_size=120).map(lambda raw: b"GET /" + raw + b"\r\n\r\n"))
def test_fuzzed_heads_after_a_valid_method_only_raise_http_error(data: bytes) -> None:
    try:
        parse_head(data, RULES)
    except HttpError as error:
        assert error.status in (400, 431, 505)


def test_render_head() -> None:
    assert render_head(200, {"A": "1", "B": "2"}) == b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
    assert render_head(599, {}) == b"HTTP/1.1 599 Unknown\r\n\r\n"
    assert render_head(599, {}, unknown_reason="Status") == b"HTTP/1.1 599 Status\r\n\r\n"
    assert all(REASONS[status] for status in (400, 405, 431, 505))


def test_http_error_reason_defaults_to_malformed_request() -> None:
    assert HttpError(400, "x").reason == "malformed_request"
    error = HttpError(400, "x", "RequestTimeout")
    assert (error.status, error.message, error.code, error.reason, str(error)) == (
        400,
        "x",
        "RequestTimeout",
        "RequestTimeout",
        "x",
    )
