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
            history.append((newest, newest.stat().st_size, before, touched))
        final = dict(model)
        newest = _newest_data_file(source)
        size = newest.stat().st_size
        for cut in range(size + 1):
            expected, ambiguous = _expected_after_cut(history, newest, cut, final)
            _check_cut(source, tmp_path_factory, newest.name, cut, expected, ambiguous)
    finally:
        store.close()


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
    factory: pytest.TempPathFactory,
    name: str,
    cut: int,
    expected: dict[bytes, bytes],
    ambiguous: dict[bytes, set[bytes | None]],
) -> None:
    target = factory.mktemp("cut")
    for path in source.iterdir():
        if path.name != "LOCK":
            shutil.copy(path, target / path.name)
    os.truncate(target / name, cut)
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
    for trial in range(120):
        victim = files[trial % len(files)]
        target = tmp_path / f"flip-{trial}"
        shutil.copytree(source, target)
        data = bytearray((target / victim.name).read_bytes())
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        (target / victim.name).write_bytes(bytes(data))
        with Bitcask.open(target, sync="never") as store:
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
        shutil.rmtree(target)
    assert outcomes["value"] > 0
    assert outcomes["corruption"] > 0, "damage under a valid hint must be caught at read time"


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
