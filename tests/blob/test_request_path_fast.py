"""The small request path's shortcuts keep their answers: kept SigV4 signing keys, the
positional x-amz-date parser, kept HTTP dates, header values trimmed without the regex when
they need none, and a zero-length body read without waiting."""

from __future__ import annotations

import asyncio
import calendar
import datetime
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.blob.s3 import sigv4
from blocks.blob.s3.http import parse_head, read_body
from blocks.blob.s3.sigv4 import EMPTY_SHA256, S3AuthError, sign_request, verify_request
from blocks.blob.s3.xml import http_date
from blocks.blob.server import _Batches

ACCESS = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def _signed(amz_date: str, secret: str = SECRET) -> dict[str, str]:
    headers = {"host": "h:1", "x-amz-date": amz_date, "x-amz-content-sha256": EMPTY_SHA256}
    headers["authorization"] = sign_request("GET", "/b/k", "", headers, ACCESS, secret, amz_date)
    return headers


def _now_ms(amz_date: str) -> int:
    return calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) * 1000


def test_a_kept_signing_key_is_never_used_for_another_secret() -> None:
    amz_date = "20261207T101500Z"
    headers = _signed(amz_date)
    now = _now_ms(amz_date)
    assert verify_request("GET", "/b/k", "", headers, {ACCESS: SECRET}, now).access_key == ACCESS
    # Same day, region and service: only the secret differs, and the kept key must not match.
    with pytest.raises(S3AuthError) as refused:
        verify_request("GET", "/b/k", "", headers, {ACCESS: SECRET + "x"}, now)
    assert refused.value.code == "SignatureDoesNotMatch"
    rotated = _signed(amz_date, SECRET + "x")
    assert verify_request("GET", "/b/k", "", rotated, {ACCESS: SECRET + "x"}, now)


def test_the_kept_signing_keys_stay_bounded() -> None:
    for day in range(1, sigv4.SIGNING_KEYS_MAX + 10):
        sigv4._derived_key(SECRET, f"2026{1 + day // 28:02d}{1 + day % 28:02d}", "r", "s3")
        assert len(sigv4._signing_keys) <= sigv4.SIGNING_KEYS_MAX


@given(st.datetimes(min_value=datetime.datetime(1970, 1, 1)))
def test_amz_date_parses_as_strptime_does(moment: datetime.datetime) -> None:
    text = moment.strftime("%Y%m%dT%H%M%SZ")
    assert sigv4._parse_amz_date(text) == _now_ms(text)
    assert sigv4._parse_amz_date(text) == _now_ms(text)  # and again, from the kept one


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "20261307T101500Z",  # month 13
        "20260230T101500Z",  # February 30
        "20261207T241500Z",  # hour 24
        "20261207 101500Z",
        "20261207T101500",
        "2026120T7101500Z",
        "2026I207T101500Z",
        "\uff120261207T101500Z",  # a digit, but not an ASCII one
        "20261207T101500Z ",
    ],
)
def test_a_bad_amz_date_is_access_denied(bad: str) -> None:
    with pytest.raises(S3AuthError) as refused:
        sigv4._parse_amz_date(bad)
    assert refused.value.code == "AccessDenied"
    headers = _signed("20261207T101500Z")
    headers["x-amz-date"] = bad
    with pytest.raises(S3AuthError):
        verify_request("GET", "/b/k", "", headers, {ACCESS: SECRET}, _now_ms("20261207T101500Z"))


@given(st.integers(min_value=-(10**12), max_value=10**13))
def test_http_date_is_strftime_of_the_whole_second(ms: int) -> None:
    expected = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ms // 1000))
    assert http_date(ms) == expected


def test_an_empty_body_is_read_without_waiting_for_the_connection() -> None:
    async def scenario() -> bytes:
        reader = asyncio.StreamReader()  # no data and no EOF: any read would wait forever
        head = parse_head(b"GET /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        return await asyncio.wait_for(read_body(reader, head, 100), 5.0)

    assert asyncio.run(scenario()) == b""


def test_a_streamed_body_is_taken_in_batches_and_a_failure_waits_its_turn() -> None:
    def pieces() -> Iterator[bytes]:
        yield b"a" * 3
        yield b"b" * 3
        yield b"c" * 3
        raise OSError("chunk lost")

    batches = _Batches(pieces(), 5)
    assert batches.take() == [b"aaa", b"bbb"]  # 6 >= 5: a batch
    assert batches.take() == [b"ccc"]  # read before the failure: sent first
    with pytest.raises(OSError, match="chunk lost"):
        batches.take()
    assert _Batches(iter([b"x"]), 5).take() == [b"x"]
    empty = _Batches(iter([]), 5)
    assert empty.take() == [] and empty.take() == []


@given(st.text(alphabet=st.characters(max_codepoint=255), max_size=40))
def test_canonical_header_values_are_trimmed_as_the_regex_trims_them(value: str) -> None:
    # A value of printable characters without double spaces skips the regex; it must come
    # out exactly as the regex path gives it, for every latin-1 text.
    canonical = sigv4._canonical_request("GET", "/b/k", "", {"x-h": value}, ["x-h"], "h")
    expected = sigv4._SPACES.sub(" ", value.strip())
    assert canonical.split("\n")[3] == f"x-h:{expected}"
