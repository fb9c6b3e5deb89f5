"""Headers that ask for a promise the server does not keep are refused (501); the values
clients send by default that ask for nothing pass."""

from __future__ import annotations

import pytest

from blocks.blob.s3.awschunked import S3RequestError
from blocks.blob.s3.ops import refuse_encryption


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-amz-server-side-encryption", "AES256"),
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-object-lock-mode", "COMPLIANCE"),
        ("x-amz-object-lock-retain-until-date", "2030-01-01T00:00:00Z"),
        ("x-amz-object-lock-legal-hold", "ON"),
        ("x-amz-bucket-object-lock-enabled", "true"),
        ("x-amz-tagging", "project=blocks"),
    ],
)
def test_a_promise_not_kept_is_refused(name: str, value: str) -> None:
    with pytest.raises(S3RequestError) as refused:
        refuse_encryption({"host": "h", name: value})
    assert refused.value.code == "NotImplemented" and refused.value.status == 501


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-amz-bucket-object-lock-enabled", "false"),  # rclone, on every CreateBucket
        ("x-amz-object-lock-legal-hold", "OFF"),
        ("x-amz-tagging-directive", "COPY"),
        ("x-amz-tagging-directive", "REPLACE"),  # with no x-amz-tagging: no tags
        ("x-amz-tagging", ""),
        ("x-amz-acl", "private"),
    ],
)
def test_a_value_that_asks_for_nothing_passes(name: str, value: str) -> None:
    refuse_encryption({"host": "h", name: value})
