"""A model-based conformance test for any ``BlobStore``: run it against yours.

Theory of operation: a Hypothesis ``RuleBasedStateMachine`` drives the store through bucket
creation and deletion, puts of byte strings built from a few repeated blocks (so chunks
deduplicate within and across objects), whole and ranged gets, heads, deletes, paginated
listings with prefixes and delimiters, multipart uploads (complete and abort), bad input and,
when the store can, restarts. Next to it runs the trivial model: a dict from bucket to a dict
from key to ``(bytes, content type, metadata)``. Checked exactly:

* a get returns exactly the bytes last put (or the inclusive slice a range asks for), and a
  HEAD reports their size and an ETag equal to their MD5 (single PUT) or ending in ``-N``;
* a listing, page after page, yields exactly the model's sorted keys and rolled-up common
  prefixes for that prefix and delimiter, each page within ``max_keys``;
* an upload is invisible until completed, and completion yields the parts' concatenation;
* bad names, ranges and part lists raise ``InvalidArgument``; missing things ``NotFound``;
  a non-empty bucket refuses deletion with ``Conflict``; none of them changes anything;
* creating an existing bucket raises ``Conflict``; so does deleting a bucket with objects
  or uploads in progress;
* after a restart every completed object is there, unchanged.

Use it by subclassing ``BlobStoreContract`` (a ``blocks.testing.contract.Contract``),
overriding ``make_subject()`` (and, if your store is durable, ``restart_subject(store)`` with
``supports_restart = True``; ``check_storage`` for extra invariants such as no leaked
chunks), then exposing ``MyContract.TestCase`` to pytest. ``make_store`` and ``restart`` are
deprecated aliases of ``make_subject`` and ``restart_subject``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, invariant, precondition, rule

from blocks.blob.api import BlobStore
from blocks.core.errors import Conflict, InvalidArgument, NotFound
from blocks.testing.contract import Contract

__all__ = ["BlobStoreContract"]

_BUCKETS = st.sampled_from(["alpha", "beta"])
_KEYS = st.sampled_from(["a", "a/b", "a/c", "a/b/c", "b", "b/", "c.txt", "dir/x", "dir/y", "é"])
_BLOCKS = [bytes([n]) * 97 + bytes(range(n, n + 60)) for n in range(4)]
_DATA = st.builds(
    lambda blocks, tail: b"".join(blocks) + tail,
    st.lists(st.sampled_from(_BLOCKS), max_size=8),
    st.binary(max_size=70),
)
_PREFIXES = st.sampled_from(["", "a", "a/", "b", "d", "dir/", "z"])
_DELIMITERS = st.sampled_from(["", "/", "."])

ModelObject = tuple[bytes, str, dict[str, str]]


def _expected_listing(keys: list[str], prefix: str, delimiter: str) -> tuple[list[str], list[str]]:
    found: list[str] = []
    prefixes: list[str] = []
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            rolled = key[: cut + len(delimiter)]
            if rolled not in prefixes:
                prefixes.append(rolled)
        else:
            found.append(key)
    return found, prefixes


class BlobStoreContract(Contract[BlobStore]):
    """Checks a ``BlobStore`` against a dict-of-dicts model."""

    properties = ("exact bytes", "ranges", "listing", "multipart", "bad input", "restart")
    legacy_hooks = {"make_store": "make_subject", "restart": "restart_subject"}

    part_bytes_min = 1
    """The store's minimum size of a part that is not the last (configure the store so)."""
    supports_restart = False
    """Set when ``restart_subject`` reopens the store (the restart rule runs only then)."""

    def make_subject(self) -> BlobStore:
        return self.make_store()

    def restart_subject(self, store: BlobStore) -> BlobStore | None:
        """Close ``store`` and open it again from its durable state."""
        return self.restart(store) if self.supports_restart else None

    def make_store(self) -> BlobStore:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def restart(self, store: BlobStore) -> BlobStore:
        """Deprecated alias of ``restart_subject``."""
        raise NotImplementedError

    def check_storage(self, store: BlobStore) -> None:
        """Extra invariants of the implementation (override; called after every step)."""

    def __init__(self) -> None:
        super().__init__()
        self.store = self.open_subject()
        self.model: dict[str, dict[str, ModelObject]] = {}
        self.uploads: dict[str, tuple[str, str, dict[int, bytes]]] = {}

    uploads_bundle = Bundle("uploads")

    def teardown(self) -> None:
        self.finish_subject(self.store)

    @rule(bucket=_BUCKETS)
    def create_bucket(self, bucket: str) -> None:
        if bucket in self.model:
            try:
                self.store.create_bucket(bucket)
            except Conflict:
                return
            raise AssertionError("creating an existing bucket must raise Conflict")
        self.store.create_bucket(bucket)
        self.model[bucket] = {}

    @rule(bucket=_BUCKETS)
    def delete_bucket(self, bucket: str) -> None:
        busy = any(upload[0] == bucket for upload in self.uploads.values())
        try:
            self.store.delete_bucket(bucket)
        except NotFound:
            assert bucket not in self.model
            return
        except Conflict:
            assert self.model[bucket] or busy
            return
        assert bucket in self.model and not self.model[bucket] and not busy
        del self.model[bucket]

    @rule(bucket=_BUCKETS, key=_KEYS, data=_DATA, content_type=st.sampled_from(["text/x", ""]))
    def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        metadata = {"origin": f"n{len(data)}"}
        try:
            info = self.store.put_object(
                bucket, key, data, content_type=content_type, metadata=metadata
            )
        except NotFound:
            assert bucket not in self.model
            return
        assert info.size == len(data)
        assert info.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.model[bucket][key] = (data, content_type or "application/octet-stream", metadata)

    @rule(bucket=_BUCKETS, key=_KEYS, first=st.integers(-40, 1500), length=st.integers(0, 900))
    def get(self, bucket: str, key: str, first: int, length: int) -> None:
        expected = self.model.get(bucket, {}).get(key)
        try:
            info, whole = self.store.get_object(bucket, key)
        except NotFound:
            assert expected is None
            return
        assert expected is not None
        assert whole == expected[0]
        assert (info.size, info.content_type, dict(info.metadata)) == (
            len(expected[0]),
            expected[1],
            expected[2],
        )
        if first < 0:
            byte_range, start, stop = (first, -1), max(0, len(whole) + first), len(whole)
        else:
            byte_range, start, stop = (first, first + length), first, first + length + 1
        if start >= len(whole) or (first < 0 and not whole):
            try:
                self.store.get_object(bucket, key, byte_range)
            except InvalidArgument:
                return
            raise AssertionError(f"range {byte_range} of {len(whole)} bytes must be refused")
        assert self.store.get_object(bucket, key, byte_range)[1] == whole[start:stop]

    @rule(bucket=_BUCKETS, key=_KEYS)
    def delete(self, bucket: str, key: str) -> None:
        try:
            existed = self.store.delete_object(bucket, key)
        except NotFound:
            assert bucket not in self.model
            return
        assert existed == (key in self.model[bucket])
        self.model[bucket].pop(key, None)

    @rule(
        bucket=_BUCKETS,
        prefix=_PREFIXES,
        delimiter=_DELIMITERS,
        max_keys=st.integers(1, 4),
        start_after=st.sampled_from(["", "a/b", "c"]),
    )
    def list_all_pages(
        self, bucket: str, prefix: str, delimiter: str, max_keys: int, start_after: str
    ) -> None:
        if bucket not in self.model:
            try:
                self.store.list_objects(bucket)
            except NotFound:
                return
            raise AssertionError("listing a missing bucket must raise NotFound")
        keys = [k for k in self.model[bucket] if k > start_after]
        want_keys, want_prefixes = _expected_listing(keys, prefix, delimiter)
        got_keys: list[str] = []
        got_prefixes: list[str] = []
        token = None
        for _ in range(len(want_keys) + len(want_prefixes) + 1):
            page = self.store.list_objects(
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=start_after,
                continuation_token=token,
            )
            assert len(page.objects) + len(page.common_prefixes) <= max_keys
            got_keys += [info.key for info in page.objects]
            for info in page.objects:
                assert info.size == len(self.model[bucket][info.key][0])
            got_prefixes += page.common_prefixes
            assert page.is_truncated == (page.next_token is not None)
            if not page.is_truncated:
                break
            token = page.next_token
        assert (got_keys, got_prefixes) == (want_keys, want_prefixes)

    @rule(target=uploads_bundle, bucket=_BUCKETS, key=_KEYS)
    def create_upload(self, bucket: str, key: str) -> str:
        try:
            upload_id = self.store.create_multipart_upload(bucket, key, content_type="x/y")
        except NotFound:
            assert bucket not in self.model
            return "missing-upload"
        self.uploads[upload_id] = (bucket, key, {})
        return upload_id

    @rule(upload_id=uploads_bundle, number=st.integers(1, 3), data=_DATA)
    def upload_part(self, upload_id: str, number: int, data: bytes) -> None:
        if upload_id not in self.uploads:
            return
        bucket, key, parts = self.uploads[upload_id]
        info = self.store.upload_part(bucket, key, upload_id, number, data)
        assert info.size == len(data) and info.number == number
        parts[number] = data

    @precondition(lambda self: bool(self.uploads))
    @rule(data=st.data())
    def complete_upload(self, data: Any) -> None:
        # Creation order, not sorted ids: ids are random, so a sorted list would differ when
        # Hypothesis replays an example (FlakyStrategyDefinition).
        upload_id = data.draw(st.sampled_from(list(self.uploads)))
        bucket, key, parts = self.uploads[upload_id]
        etags = {n: hashlib.md5(b, usedforsecurity=False).hexdigest() for n, b in parts.items()}
        numbers = sorted(parts)
        too_small = any(len(parts[n]) < self.part_bytes_min for n in numbers[:-1])
        try:
            info = self.store.complete_multipart_upload(
                bucket, key, upload_id, [(n, etags[n]) for n in numbers]
            )
        except InvalidArgument:
            assert not numbers or too_small
            return
        assert numbers and not too_small
        joined = b"".join(parts[n] for n in numbers)
        assert info.size == len(joined) and info.etag.endswith(f"-{len(numbers)}")
        self.model[bucket][key] = (joined, "x/y", {})
        del self.uploads[upload_id]

    @rule(upload_id=uploads_bundle)
    def abort_upload(self, upload_id: str) -> None:
        if upload_id not in self.uploads:
            try:
                self.store.abort_multipart_upload("alpha", "a", upload_id)
            except NotFound:
                return
            raise AssertionError("aborting an unknown upload must raise NotFound")
        bucket, key, _ = self.uploads.pop(upload_id)
        self.store.abort_multipart_upload(bucket, key, upload_id)

    @rule(
        bucket=st.sampled_from(["", "A", "ab", "a" * 64, "-ab", "a..b", "1.2.3.4", "x_y"]),
        key=st.sampled_from(["", "a" * 1025, "k\x00"]),
    )
    def bad_input_changes_nothing(self, bucket: str, key: str) -> None:
        for call in (
            lambda: self.store.create_bucket(bucket),
            lambda: self.store.put_object("alpha", key, b"x"),
            lambda: self.store.get_object("alpha", key),
        ):
            try:
                call()
            except InvalidArgument:
                continue
            raise AssertionError("bad input must raise InvalidArgument")

    @precondition(lambda self: self.supports_restart and self.supports("restart"))
    @rule()
    def restart_store(self) -> None:
        reopened = self.reopen_subject(self.store)
        if reopened is not None:
            self.store = reopened

    @invariant()
    def buckets_match(self) -> None:
        assert [b.name for b in self.store.list_buckets()] == sorted(self.model)
        self.check_storage(self.store)
