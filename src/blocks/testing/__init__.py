"""Public test kit: real process clusters under a seeded nemesis (process, network, disk and
clock faults), histories and their checks, and the virtual-time simulation runner.

See docs/testing.md for a worked example against your own server."""

from blocks.testing.disk import FsyncFaults, SmallDisk, small_disk_unavailable
from blocks.testing.history import (
    History,
    Op,
    OpType,
    UniqueValuesCheck,
    check_unique_values,
)
from blocks.testing.nemesis import (
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    Fault,
    FaultKind,
    Nemesis,
    nemesis_seeds,
    nemesis_steps,
    plan,
)
from blocks.testing.network import Network
from blocks.testing.powerloss import PowerLossDisk, PowerLossReport
from blocks.testing.process import (
    ClusterError,
    NodeInfo,
    NodeState,
    ProcessCluster,
    ServerSpec,
    blocks_argv,
    free_ports,
)
from blocks.testing.proxy import Direction, LinkProxy
from blocks.testing.simloop import (
    SimClock,
    Simulation,
    SimulationDeadlock,
    SimulationTimeLimit,
    VirtualTimeLoop,
    run_simulation,
)

__all__ = [
    "NETWORK_FAULTS",
    "PROCESS_FAULTS",
    "ClusterError",
    "Direction",
    "Fault",
    "FaultKind",
    "FsyncFaults",
    "History",
    "LinkProxy",
    "Nemesis",
    "Network",
    "NodeInfo",
    "NodeState",
    "Op",
    "OpType",
    "PowerLossDisk",
    "PowerLossReport",
    "ProcessCluster",
    "ServerSpec",
    "SimClock",
    "Simulation",
    "SimulationDeadlock",
    "SimulationTimeLimit",
    "SmallDisk",
    "UniqueValuesCheck",
    "VirtualTimeLoop",
    "blocks_argv",
    "check_unique_values",
    "free_ports",
    "nemesis_seeds",
    "nemesis_steps",
    "plan",
    "run_simulation",
    "small_disk_unavailable",
]
