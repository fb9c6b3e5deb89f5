"""The metadata journal: records, torn and corrupt tails, compaction, group commit, inline
objects."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.blob import LocalBlobStore
from blocks.blob.storage.journal import LogJournal
from blocks.blob.storage.meta import ChunkRef, Manifest, PartRecord, UploadRecord
from blocks.blob.storage.pipeline import take_small
from blocks.blob.storage.records import (
    BucketDelete,
    BucketPut,
    ObjectDelete,
    ObjectPut,
    PartPut,
    Record,
    UploadAbort,
    UploadComplete,
    UploadPut,
    decode,
    encode,
)
from blocks.core.errors import Corruption, NotFound, Unavailable
from blocks.core.log.format import LENGTH_MAX, OFFSET_END, scan_frames

_TEXT = st.text(max_size=12)
_CHUNKS = st.lists(
    st.builds(ChunkRef, st.text("0123456789abcdef", min_size=64, max_size=64), st.integers(1, 99)),
    max_size=3,
).map(tuple)
_MANIFESTS = st.builds(
    Manifest,
    bucket=_TEXT,
    key=_TEXT,
    size=st.just(0),
    etag=_TEXT,
    content_type=_TEXT,
    modified_ms=st.integers(0, 2**50),
    chunks=_CHUNKS,
    metadata=st.dictionaries(_TEXT, _TEXT, max_size=2),
    parts_count=st.integers(0, 10),
)


def _inline(manifest: Manifest, body: bytes) -> ObjectPut:
    return ObjectPut(Manifest(**{**_fields(manifest), "size": len(body), "chunks": ()}), body)


def _fields(manifest: Manifest) -> dict[str, Any]:
    return {name: getattr(manifest, name) for name in Manifest.__slots__}


_RECORDS: st.SearchStrategy[Record] = st.one_of(
    st.builds(BucketPut, _TEXT, st.integers(0, 2**50)),
    st.builds(BucketDelete, _TEXT),
    st.builds(ObjectPut, _MANIFESTS),
    st.builds(_inline, _MANIFESTS, st.binary(max_size=200)),
    st.builds(ObjectDelete, _TEXT, _TEXT),
    st.builds(UploadPut, st.builds(UploadRecord, _TEXT, _TEXT, _TEXT, _TEXT, st.integers(0, 9))),
    st.builds(
        PartPut,
        st.builds(
            PartRecord,
            _TEXT,
            st.integers(1, 10_000),
            _TEXT,
            st.integers(0, 9),
            st.binary(max_size=16),
            _CHUNKS,
        ),
    ),
    st.builds(UploadComplete, _TEXT, _MANIFESTS),
    st.builds(UploadAbort, _TEXT),
)


def _same(decoded: Record, original: Record) -> bool:
    if isinstance(original, ObjectPut):
        assert isinstance(decoded, ObjectPut)
        body = None if decoded.body is None else bytes(decoded.body)
        fields = {**_fields(decoded.manifest), "inline_offset": -1, "record_bytes": 0}
        return body == original.body and fields == _fields(original.manifest)
    if isinstance(original, UploadComplete):
        assert isinstance(decoded, UploadComplete)
        fields = {**_fields(decoded.manifest), "record_bytes": 0}
        return decoded.upload_id == original.upload_id and fields == _fields(original.manifest)
    return decoded == original


@given(_RECORDS)
def test_records_round_trip(record: Record) -> None:
    data = encode(record)
    decoded = decode(data, offset=7)
    assert _same(decoded, record)
    if isinstance(record, ObjectPut) and record.body is not None:
        assert isinstance(decoded, ObjectPut) and decoded.manifest.inline_offset == 7


@given(_RECORDS, st.data())
def test_damaged_records_raise_only_corruption(record: Record, data: st.DataObject) -> None:
    encoded = bytearray(encode(record))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded[:cut]), bytes(encoded) + b"\x00" * 3):
        try:
            decode(candidate)
        except Corruption:
            continue
        # Only a truncated or extended inline body can still parse: its size then disagrees.
        assert candidate == bytes(encoded) or isinstance(record, ObjectPut)
    if encoded:
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
        with contextlib.suppress(Corruption):
            decode(bytes(encoded))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_corruption(blob: bytes) -> None:
    with contextlib.suppress(Corruption):
        decode(blob)


@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(0, 120), st.booleans())
def test_take_small_keeps_every_byte(pieces: list[bytes], limit: int, whole: bool) -> None:
    data = b"".join(pieces)
    body, rest = take_small(data if whole else iter(pieces), limit)
    assert body == (data if len(data) <= limit else None)
    assert (rest if isinstance(rest, bytes) else b"".join(rest)) == data


# -- crash safety: cut the journal at any byte -------------------------------------------------

Model = dict[str, dict[str, bytes]]


def _segment(root: Path) -> Path:
    (segment,) = (root / "journal").glob("journal-*/*.log")
    return segment


def _script(store: LocalBlobStore) -> list[Callable[[], None]]:
    """Operations that each append exactly one journal record."""
    big = os.urandom(700)  # chunked (above the inline bound of 300 bytes)
    upload: list[str] = []

    def create_upload() -> None:
        upload.append(store.create_multipart_upload("bkt", "multi"))

    def part(number: int, data: bytes) -> Callable[[], None]:
        return lambda: (store.upload_part("bkt", "multi", upload[0], number, data), None)[1]

    def complete() -> None:
        etags = [(n, hashlib.md5(d).hexdigest()) for n, d in ((1, b"a" * 400), (2, b"b" * 50))]
        store.complete_multipart_upload("bkt", "multi", upload[0], etags)

    return [
        lambda: (store.create_bucket("bkt"), None)[1],
        lambda: (store.put_object("bkt", "small", b"s" * 100), None)[1],
        lambda: (store.put_object("bkt", "large", big), None)[1],
        lambda: (store.put_object("bkt", "small", b"t" * 250), None)[1],
        lambda: (store.delete_object("bkt", "large"), None)[1],
        create_upload,
        part(1, b"a" * 400),
        part(2, b"b" * 50),
        complete,
        lambda: (store.put_object("bkt", "large", big[::-1]), None)[1],
        lambda: (store.create_bucket("other"), None)[1],
        lambda: (store.put_object("other", "x", b""), None)[1],
    ]


def _state(store: LocalBlobStore) -> Model:
    return {
        bucket.name: {
            o.key: store.get_object(bucket.name, o.key)[1]
            for o in store.list_objects(bucket.name).objects
        }
        for bucket in store.list_buckets()
    }


def _open(root: Path) -> LocalBlobStore:
    return LocalBlobStore(
        root,
        codec="rs:2+1",
        chunk_bytes=512,
        inline_bytes_max=300,
        part_bytes_min=100,
        fsync=False,
        orphan_grace_s=0,  # crash leftovers are collected at once
    )


def _shard_files(root: Path) -> set[Path]:
    shards = root / "shards"
    return {p.relative_to(root) for p in shards.rglob("*") if p.is_file()}


def _journal_end(segment: Path) -> int:
    """Where the last complete record of a journal segment ends (filler written ahead of the
    active segment's end, ``blocks.core.log.storage``, is not part of it)."""
    data = segment.read_bytes()
    return scan_frames(data, int(segment.stem), OFFSET_END, LENGTH_MAX, 4096).valid_bytes


def test_a_journal_cut_at_any_byte_shows_exactly_the_complete_operations(tmp_path: Path) -> None:
    """A crash leaves the journal cut somewhere in the record being written, with that
    operation's shards written and none of its releases done (they follow durability):
    the reopened store shows exactly the operations before it, and no leftover chunk."""
    source = tmp_path / "source"
    store = _open(source)
    states: list[Model] = [{}]
    ends = [0]
    snapshots = [tmp_path / "after-0"]
    shutil.copytree(source, snapshots[0])
    for operation in _script(store):
        operation()
        assert store.ledger.wait_for_deletes()
        states.append(_state(store))
        ends.append(_journal_end(_segment(source)))
        snapshots.append(tmp_path / f"after-{len(ends) - 1}")
        shutil.copytree(source, snapshots[-1])
    journal = _segment(source).read_bytes()
    store.close()
    assert sorted(set(ends)) == ends  # one record per operation
    cuts = sorted({*range(0, ends[-1], 17), *ends[:-1], *(e - 1 for e in ends[1:])})
    for cut in cuts:
        torn = next(n for n, end in enumerate(ends) if end > cut)  # the record being written
        crashed = tmp_path / f"cut-{cut}"
        shutil.copytree(snapshots[torn - 1], crashed)
        written_ns = time.time_ns() - 1_000_000_000  # leftovers predate the reopen
        for path in _shard_files(snapshots[torn]) - _shard_files(crashed):
            (crashed / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(snapshots[torn] / path, crashed / path)
            # A copy is stamped now; in the same millisecond as the reopen it would be too
            # young for a zero grace period (orphans are collected if written *before* it),
            # which a fresh-clone run once hit.
            os.utime(crashed / path, ns=(written_ns, written_ns))
        segment = _segment(crashed) if torn > 1 else None
        if segment is None:  # the journal's first record was torn: its file may not exist
            segment = crashed / "journal" / "journal-000001" / "00000000000000000000.log"
            segment.parent.mkdir(parents=True, exist_ok=True)
        segment.write_bytes(journal[:cut])
        reopened = _open(crashed)
        try:
            assert _state(reopened) == states[torn - 1], cut
            assert reopened.chunks.stored_chunk_ids() == set(reopened.ledger.referenced())
        finally:
            reopened.close()
            shutil.rmtree(crashed)


def test_a_corrupt_record_is_skipped_and_counted(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.create_bucket("bkt")
    store.put_object("bkt", "rotten", b"r" * 200)
    store.put_object("bkt", "good", b"g" * 200)
    store.close()
    segment = _segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[data.index(b"r" * 200) + 10] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = _open(tmp_path)
    assert [o.key for o in reopened.list_objects("bkt").objects] == ["good"]
    assert reopened.corrupt_records == 1
    assert reopened.get_object("bkt", "good")[1] == b"g" * 200
    reopened.close()


def test_inline_bit_rot_after_open_is_an_error_not_wrong_bytes(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.create_bucket("bkt")
    store.put_object("bkt", "k", b"k" * 200)
    segment = _segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[data.index(b"k" * 200) + 5] ^= 0x01
    segment.write_bytes(bytes(data))
    # The bytes the PUT wrote are still in memory (``read_cached``): a GET returns them,
    # never the damaged ones; scrub reads the record and finds the damage.
    assert store.get_object("bkt", "k")[1] == b"k" * 200
    assert store.scrub().chunks_lost == 1
    store._forget_inline()  # as when they have been dropped from memory
    with pytest.raises(Corruption):
        store.get_object("bkt", "k")
    store.close()


# -- compaction -------------------------------------------------------------------------------


def test_compaction_bounds_the_journal_and_keeps_the_state(tmp_path: Path) -> None:
    store = LocalBlobStore(
        tmp_path, chunk_bytes=128, inline_bytes_max=300, compact_bytes_min=20_000, fsync=False
    )
    store.create_bucket("bkt")
    expected: dict[str, bytes] = {}
    for n in range(400):
        key = f"k{n % 7}"
        if n % 11 == 10:
            store.delete_object("bkt", key)
            expected.pop(key, None)
        else:
            expected[key] = bytes([n % 256]) * (100 + n % 400)  # inline and chunked
            store.put_object("bkt", key, expected[key])
        assert store.journal.bytes_total <= 2 * 20_000 + 1000
    assert store.compactions >= 3
    assert _state(store) == {"bkt": expected}
    store.close()
    assert len(list((tmp_path / "journal").glob("journal-*"))) == 1
    reopened = LocalBlobStore(
        tmp_path, chunk_bytes=128, inline_bytes_max=300, fsync=False, orphan_grace_s=0
    )
    assert _state(reopened) == {"bkt": expected}
    assert reopened.chunks.stored_chunk_ids() == set(reopened.ledger.referenced())
    reopened.close()


def test_a_crash_during_compaction_keeps_the_old_journal(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.create_bucket("bkt")
    store.put_object("bkt", "k", b"v" * 50)
    store.close()
    half = tmp_path / "journal" / "journal-000002"  # a rewrite that never switched CURRENT
    half.mkdir()
    (half / "00000000000000000000.log").write_bytes(b"garbage")
    reopened = _open(tmp_path)
    assert _state(reopened) == {"bkt": {"k": b"v" * 50}}
    assert not half.exists()
    reopened.close()


# -- durability and the inline fast path ------------------------------------------------------


def test_concurrent_durable_puts_share_fsyncs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.create_bucket("bkt")
    log = store.journal.log  # type: ignore[attr-defined]
    before = log.stats().fsyncs
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for round_ in range(10):
            store.put_object("bkt", f"{n}-{round_}", os.urandom(4096))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    fsyncs = log.stats().fsyncs - before
    assert 1 <= fsyncs < 80  # 80 durable PUTs, fewer fsyncs
    assert log.durable_offset == log.next_offset  # every acknowledged record is durable
    assert store.chunks.stored_chunk_ids() == set()  # all inline: no shard file
    store.close()
    reopened = LocalBlobStore(tmp_path)
    assert len(reopened.list_objects("bkt").objects) == 80
    reopened.close()


def test_inline_reads_open_no_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _open(tmp_path)
    store.create_bucket("bkt")
    store.put_object("bkt", "k", bytes(range(200)))

    def no_shards(*args: object) -> None:
        raise AssertionError("an inline read touched the chunk store")

    monkeypatch.setattr(store.chunks, "read_views", no_shards)
    assert store.get_object("bkt", "k")[1] == bytes(range(200))
    assert store.get_object("bkt", "k", (10, 19))[1] == bytes(range(10, 20))
    assert store.get_object("bkt", "k", (150, 500))[1] == bytes(range(150, 200))
    store.close()


def test_a_directory_of_the_older_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "meta" / "buckets").mkdir(parents=True)
    with pytest.raises(Exception, match="older layout"):
        LocalBlobStore(tmp_path)
    with pytest.raises(NotFound):
        _open(tmp_path / "fresh").head_object("bkt", "k")


def test_a_failed_journal_fsync_refuses_every_record_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = LogJournal(tmp_path / "journal", fsync=True)
    assert journal.submit(b"kept").result() == 0

    def failing(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing, raising=False)
    futures = [journal.submit(b"lost-%d" % n) for n in range(3)]
    outcomes: list[Any] = [None] * 3

    def wait(index: int) -> None:
        try:
            outcomes[index] = futures[index].result()
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=wait, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes)
    monkeypatch.undo()
    journal.close()
    reopened = LogJournal(tmp_path / "journal", fsync=True)
    assert next(record for _, record in reopened.replay()) == b"kept"
    reopened.close()
