"""Runs the public sequencer contract against every generator."""

from __future__ import annotations

import random
from typing import Any

from blocks.sequencer.api import IdGenerator
from blocks.sequencer.contract import SequencerContract
from blocks.sequencer.snowflake import Layout, Snowflake
from blocks.sequencer.tickets import TicketClient, TicketCore
from blocks.sequencer.timeids import UlidGenerator, Uuid7Generator


class SnowflakeSmallSequence(SequencerContract):
    def make_subject(self) -> IdGenerator[Any]:
        # Four IDs per millisecond so that exhaustion (and waiting) happens constantly.
        layout = Layout(timestamp_bits=41, worker_bits=10, sequence_bits=2)
        return Snowflake(
            7, clock=self.clock, layout=layout, sleep=self.sleep, backwards_wait_max_ms=50
        )


class SnowflakeDefault(SequencerContract):
    def make_subject(self) -> IdGenerator[Any]:
        return Snowflake(1023, clock=self.clock, sleep=self.sleep)


class Uuid7(SequencerContract):
    def make_subject(self) -> IdGenerator[Any]:
        return Uuid7Generator(clock=self.clock, rng=random.Random(1))


class Ulids(SequencerContract):
    def make_subject(self) -> IdGenerator[Any]:
        return UlidGenerator(clock=self.clock, rng=random.Random(2))


class Tickets(SequencerContract):
    def make_subject(self) -> IdGenerator[Any]:
        core = TicketCore(reserve_ahead=5)

        def allocate(count: int) -> range:
            needed = core.reservation_needed(count)
            if needed is not None:
                core.reserved(needed)
            return core.allocate(count)

        return TicketClient(allocate, block_size=3)


TestSnowflakeSmallSequence = SnowflakeSmallSequence.TestCase
TestSnowflakeDefault = SnowflakeDefault.TestCase
TestUuid7 = Uuid7.TestCase
TestUlid = Ulids.TestCase
TestTickets = Tickets.TestCase
