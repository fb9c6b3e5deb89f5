"""Crash and damage: cut the newest file at every byte, flip bytes, kill -9 mid-writes.

Claims checked (docs/kv.md): after a crash, every write acknowledged under ``sync=always``
is there and nothing else is; damaged bytes never come back as a value.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import Corruption
from blocks.kv import Bitcask

Op = tuple[str, bytes, list[bytes]]  # ("put"|"delete"|"put_many", key, values)

op_strategy = st.one_of(
    st.tuples(st.just("put"), st.sampled_from([b"a", b"b", b"c", b"d"]), st.binary(max_size=40)),
    st.tuples(st.just("delete"), st.sampled_from([b"a", b"b", b"c", b"d"]), st.just(b"")),
    st.tuples(
        st.just("put_many"),
        st.sampled_from([b"a", b"b", b"c", b"d"]),
        st.binary(max_size=20),
    ),
)


def _apply(store: Bitcask, model: dict[bytes, bytes], op: tuple[str, bytes, bytes]) -> list[bytes]:
    """Apply ``op`` to store and model; return the keys it may touch."""
    kind, key, value = op
    if kind == "put":
        store.put(key, value)
        model[key] = value
        return [key]
    if kind == "delete":
        store.delete(key)
        model.pop(key, None)
        return [key]
    items = [(key, value), (key + b"!", value + b"!")]
    store.put_many(items)
    model.update(items)
    return [key, key + b"!"]


def _newest_data_file(directory: Path) -> Path:
    return max(p for p in directory.iterdir() if p.suffix == ".data")


@settings(max_examples=6)
@given(ops=st.lists(op_strategy, min_size=1, max_size=25))
def test_cut_newest_file_at_every_byte(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    source = tmp_path_factory.mktemp("cut-source")
    model: dict[bytes, bytes] = {}
    history: list[tuple[Path, int, dict[bytes, bytes], list[bytes]]] = []
    store = Bitcask.open(source, sync="always", file_bytes_max=300)
    try:
        for op in ops:
            before = dict(model)
            touched = _apply(store, model, op)
            newest = _newest_data_file(source)
            history.append((newest, _records_end(store), before, touched))
        final = dict(model)
        newest = _newest_data_file(source)
        size = _records_end(store)
        assert newest.stat().st_size >= size  # the rest is the zero-filled preallocated tail
        scratch = _scratch_directory(tmp_path_factory.mktemp("cuts"))
        try:
            for cut in range(size + 1):
                expected, ambiguous = _expected_after_cut(history, newest, cut, final)
                _check_cut(source, scratch, newest.name, cut, expected, ambiguous)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        store.close()


def _scratch_directory(fallback: Path) -> Path:
    """Where damaged copies of a store go: a RAM disk when there is one, else ``fallback``.
    Each copy is written, reopened (recovery fsyncs what it cuts) and deleted; on a disk those
    fsyncs and deletes were most of these tests' time, and the recovery checked is the same.
    The caller removes the directory."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="bitcask-damage-", dir=shm))
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _records_end(store: Bitcask) -> int:
    """Where the active file's records end (the file itself runs on, zero-filled)."""
    return store._active.size


def _expected_after_cut(
    history: list[tuple[Path, int, dict[bytes, bytes], list[bytes]]],
    newest: Path,
    cut: int,
    final: dict[bytes, bytes],
) -> tuple[dict[bytes, bytes], dict[bytes, set[bytes | None]]]:
    """The model state a cut at ``cut`` must give, plus keys one torn op leaves undecided."""
    for index, (path, size_after, before, touched) in enumerate(history):
        if path == newest and size_after > cut:
            state_after = history[index + 1][2] if index + 1 < len(history) else final
            ambiguous = {key: {before.get(key), state_after.get(key)} for key in touched}
            return before, ambiguous
    return final, {}


def _check_cut(
    source: Path,
    scratch: Path,
    name: str,
    cut: int,
    expected: dict[bytes, bytes],
    ambiguous: dict[bytes, set[bytes | None]],
) -> None:
    target = Path(tempfile.mkdtemp(prefix="cut-", dir=scratch))
    for path in source.iterdir():
        if path.name != "LOCK":
            shutil.copy(path, target / path.name)
    # A crash leaves the file's preallocated length, zeros past the last write; a file
    # without preallocation just ends. Alternate the two.
    length = (target / name).stat().st_size if cut % 2 else cut
    with open(target / name, "r+b") as handle:
        handle.truncate(cut)
        handle.truncate(length)
    with Bitcask.open(target, sync="never") as reopened:
        for key in set(expected) | set(ambiguous) | set(reopened.keys()):
            got = reopened.get(key)
            if key in ambiguous:
                assert got in ambiguous[key], (cut, key, got)
            else:
                assert got == expected.get(key), (cut, key, got, expected.get(key))
    shutil.rmtree(target)


def _build_store(directory: Path, rng: random.Random) -> dict[bytes, set[bytes]]:
    """A store with several files, a merge and later writes; returns every value per key."""
    written: dict[bytes, set[bytes]] = {}
    with Bitcask.open(directory, sync="never", file_bytes_max=400) as store:
        for round_number in range(3):
            for _ in range(30):
                # Keys written after the merge are new ones, so merged values stay live.
                key = b"key-%d" % (rng.randrange(12) + 100 * (round_number == 2))
                value = rng.randbytes(rng.randrange(1, 30))
                store.put(key, value)
                written.setdefault(key, set()).add(value)
                if rng.random() < 0.15:
                    store.delete(key)
            if round_number == 1:
                store.merge()
    return written


def test_flipped_bytes_never_return_a_wrong_value(tmp_path: Path) -> None:
    rng = random.Random(1234)
    source = tmp_path / "source"
    written = _build_store(source, rng)
    files = sorted(p for p in source.iterdir() if p.name != "LOCK" and p.stat().st_size > 0)
    assert any(p.suffix == ".hint" for p in files), "the merge should have left hint files"
    outcomes = {"value": 0, "corruption": 0, "absent": 0}
    scratch = _scratch_directory(tmp_path / "flips")
    try:
        for trial in range(120):
            victim = files[trial % len(files)]
            target = scratch / f"flip-{trial}"
            shutil.copytree(source, target)
            _flip_and_read(target / victim.name, rng, written, outcomes)
            shutil.rmtree(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert outcomes["value"] > 0
    assert outcomes["corruption"] > 0, "damage under a valid hint must be caught at read time"


def _flip_and_read(
    victim: Path, rng: random.Random, written: dict[bytes, set[bytes]], outcomes: dict[str, int]
) -> None:
    """Flip one random bit of ``victim``, reopen its store and read every key written."""
    data = bytearray(victim.read_bytes())
    position = rng.randrange(len(data))
    data[position] ^= 1 << rng.randrange(8)
    victim.write_bytes(bytes(data))
    with Bitcask.open(victim.parent, sync="never") as store:
        assert set(store.keys()) <= set(written)
        for key in written:
            try:
                value = store.get(key)
            except Corruption:
                outcomes["corruption"] += 1
                continue
            if value is None:
                outcomes["absent"] += 1
            else:
                assert value in written[key], (victim.name, position, key)
                outcomes["value"] += 1


_WRITER = textwrap.dedent(
    """
    import sys
    from blocks.kv import Bitcask
    store = Bitcask.open(sys.argv[1], sync=sys.argv[2], file_bytes_max=4096)
    i = 0
    while True:
        store.put(b"key-%d" % i, b"value-%d" % i)
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("sync", ["always", "batch"])
def test_kill_minus_9_keeps_every_acknowledged_write(tmp_path: Path, sync: str) -> None:
    directory = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), sync],
        stdout=subprocess.PIPE,
        text=True,
    )
    acknowledged = -1
    try:
        assert process.stdout is not None
        for line in process.stdout:
            acknowledged = int(line)
            if acknowledged >= 300:
                break
    finally:
        process.kill()
        process.wait(timeout=10)
    # The writer ran on until the kill landed: what it printed meanwhile was acknowledged too.
    assert process.stdout is not None
    for line in process.stdout.read().splitlines():
        acknowledged = int(line)
    process.stdout.close()
    assert acknowledged >= 300
    with Bitcask.open(directory) as store:
        for i in range(acknowledged + 1):
            assert store.get(b"key-%d" % i) == b"value-%d" % i
        # At most the one write in flight when the kill landed can exist beyond those.
        assert len(store) in (acknowledged + 1, acknowledged + 2)


def test_a_crash_leaves_a_zero_tail_that_open_cuts_in_any_file(tmp_path: Path) -> None:
    """Durable stores zero-fill ahead of their records; a crash leaves those zeros behind."""
    source, crashed = tmp_path / "source", tmp_path / "crashed"
    values = {b"key-%d" % i: b"value-%d" % i for i in range(40)}
    store = Bitcask.open(source, sync="always", file_bytes_max=1024)
    try:
        for key, value in values.items():
            store.put(key, value)
        sealed = sorted(p for p in source.iterdir() if p.suffix == ".data")[:-1]
        assert sealed and all(p.read_bytes()[-1:] != b"\0" for p in sealed)  # cut when sealed
        active = _newest_data_file(source)
        records_end = _records_end(store)
        assert active.stat().st_size > records_end  # the preallocated tail
        shutil.copytree(source, crashed, ignore=shutil.ignore_patterns("LOCK"))
    finally:
        store.close()
    assert active.stat().st_size == records_end  # close cuts it
    # An older file with a zero tail (a crash between writing zeros and sealing, with a
    # newer file already there) is no damage either.
    older = sorted(p for p in crashed.iterdir() if p.suffix == ".data")[0]
    with open(older, "ab") as handle:
        handle.write(bytes(700))
    with Bitcask.open(crashed) as reopened:
        report = reopened.recovery
        assert report.damaged_files == [] and report.torn_bytes_dropped == 0
        assert report.preallocated_bytes_dropped >= 700 + 1
        keys = reopened.keys()  # a Bitcask is not iterable; keys() is its snapshot
        assert {key: reopened.get(key) for key in keys} == values
    assert (crashed / active.name).stat().st_size == records_end
    assert not older.read_bytes().endswith(b"\0")


def test_a_torn_record_before_the_zero_tail_is_cut_with_it(tmp_path: Path) -> None:
    store = Bitcask.open(tmp_path / "s", sync="always")
    try:
        store.put(b"a", b"1")
        first_end = _records_end(store)
        store.put(b"b", b"2" * 50)
        active = _newest_data_file(tmp_path / "s")
        crashed = tmp_path / "crashed"
        shutil.copytree(tmp_path / "s", crashed, ignore=shutil.ignore_patterns("LOCK"))
    finally:
        store.close()
    data = bytearray((crashed / active.name).read_bytes())
    data[first_end + 30 :] = bytes(len(data) - first_end - 30)  # b's record half written
    (crashed / active.name).write_bytes(bytes(data))
    with Bitcask.open(crashed) as reopened:
        assert reopened.get(b"a") == b"1" and reopened.get(b"b") is None
        assert reopened.recovery.torn_bytes_dropped == len(data) - first_end
    assert (crashed / active.name).stat().st_size == first_end
