"""sequencer under the nemesis: one ``blocks sequencer serve`` process, callers taking IDs and
tickets through the public client while the server is killed (-9), restarted, paused and
restarted with its wall clock stepped (forwards or back by up to ten minutes). Every ID and
ticket is unique, and each caller's IDs increase."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.testing import (
    PROCESS_FAULTS,
    FaultKind,
    Nemesis,
    ProcessCluster,
    nemesis_seeds,
    nemesis_steps,
)
from blocks.testing.servers import sequencer_spec
from blocks.testing.workloads import SequencerWorkload, Workload, run_under_nemesis

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    root = tmp_path_factory.mktemp("sequencer")
    with ProcessCluster(sequencer_spec(), ["s1"], root) as nodes:
        nodes.start_all()
        yield nodes


@pytest.mark.parametrize("seed", nemesis_seeds([1]))
def test_sequencer_survives_process_faults_and_clock_jumps(
    cluster: ProcessCluster, seed: int
) -> None:
    kinds = [*PROCESS_FAULTS, FaultKind.CLOCK_JUMP]
    nemesis = Nemesis(cluster, seed=seed, kinds=kinds, steps=nemesis_steps())

    async def workload() -> Workload:
        return SequencerWorkload(cluster.address("s1"), cluster.token)

    run_under_nemesis("sequencer", cluster, nemesis, workload)
