from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import Conflict, Corruption, InvalidArgument, Unavailable
from blocks.sequencer.lease import LockFileLeases
from blocks.sequencer.snowflake import Snowflake
from blocks.sequencer.statefile import decode_state, encode_state
from blocks.sequencer.tickets import TicketClient, TicketServer


def test_ticket_server_survives_restarts_without_reuse(tmp_path: Path) -> None:
    seen: list[int] = []
    for _ in range(4):
        server = TicketServer(str(tmp_path), reserve_ahead=50, fsync=False)
        for count in (1, 7, 60, 3):
            seen.extend(server.allocate(count))
        # dropping the server without a clean shutdown is the crash
    assert seen == sorted(set(seen))
    assert seen[0] == 1


def test_ticket_client_bulk_and_single(tmp_path: Path) -> None:
    server = TicketServer(str(tmp_path), fsync=False)
    client = TicketClient(server.allocate, block_size=10)
    ids = [client.next_id() for _ in range(5)] + client.next_ids(23) + client.next_ids(0)
    assert ids == list(range(1, 29))


@given(payload=st.binary(max_size=64), cut=st.integers(0, 200), flip=st.integers(0, 200))
def test_state_file_detects_every_truncation_and_bit_flip(
    payload: bytes, cut: int, flip: int
) -> None:
    data = encode_state(payload)
    assert decode_state(data) == payload
    if cut < len(data):
        with pytest.raises(Corruption):
            decode_state(data[:cut])
    with pytest.raises(Corruption):
        decode_state(data + b"\x00")
    index = flip % len(data)
    flipped = data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
    with pytest.raises(Corruption):
        decode_state(flipped)


def test_corrupt_ticket_file_is_refused(tmp_path: Path) -> None:
    TicketServer(str(tmp_path), fsync=False).allocate(1)
    path = tmp_path / "tickets.state"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(Corruption):
        TicketServer(str(tmp_path))


@pytest.mark.parametrize("count", [0, -3, 1 << 25, "4"])
def test_ticket_counts_are_bounded(tmp_path: Path, count: object) -> None:
    server = TicketServer(str(tmp_path), fsync=False)
    with pytest.raises(InvalidArgument):
        server.allocate(count)  # type: ignore[arg-type]
    assert server.allocate(1) == range(1, 2)


def test_leases_are_exclusive_until_expiry(tmp_path: Path) -> None:
    clock = ManualClock(wall_ms=1_000_000, monotonic_s=0)
    leases = LockFileLeases(
        str(tmp_path), workers=2, ttl_ms=1000, safety_margin_ms=100, clock=clock, fsync=False
    )
    first = leases.acquire("a")
    second = leases.acquire("b")
    assert {first.worker_id, second.worker_id} == {0, 1}
    with pytest.raises(Unavailable):
        leases.acquire("c")
    clock.advance(ms=500)
    leases.renew(first)
    clock.advance(ms=850)  # first renewed at 500 ms: expires 1500; second expired at 1000
    assert first.held() and not second.held()
    third = leases.acquire("c")
    assert third.worker_id == second.worker_id
    assert third.previous_expires_at_ms == 1_001_000
    with pytest.raises(Conflict):
        leases.renew(second)
    assert not second.held()


def test_holder_stops_before_the_table_expires(tmp_path: Path) -> None:
    clock = ManualClock(wall_ms=5_000, monotonic_s=0)
    leases = LockFileLeases(
        str(tmp_path), workers=1, ttl_ms=1000, safety_margin_ms=200, clock=clock, fsync=False
    )
    lease = leases.acquire("a")
    generator = Snowflake(lease.worker_id, clock=clock, lease=lease, epoch_ms=0)
    generator.next_id()
    clock.advance(ms=800)
    with pytest.raises(Unavailable):
        generator.next_id()
    leases.release(lease)
    again = leases.acquire("b")
    follower = Snowflake(
        again.worker_id,
        clock=clock,
        lease=again,
        epoch_ms=0,
        min_timestamp_ms=again.previous_expires_at_ms,
        sleep=clock.advance,
        backwards_wait_max_ms=1000,
    )
    assert follower.decode(follower.next_id()).unix_ms > 5_800


def test_lease_file_corruption_is_reported(tmp_path: Path) -> None:
    leases = LockFileLeases(str(tmp_path), workers=4, fsync=False)
    leases.acquire("a")
    with open(os.path.join(tmp_path, "leases.state"), "r+b") as handle:
        handle.seek(10)
        handle.write(b"\xff")
    with pytest.raises(Corruption):
        leases.acquire("b")
