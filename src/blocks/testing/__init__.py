"""Public test kit: the virtual-time loop and simulation runner (more checkers join later)."""

from blocks.testing.simloop import (
    SimClock,
    Simulation,
    SimulationDeadlock,
    SimulationTimeLimit,
    VirtualTimeLoop,
    run_simulation,
)

__all__ = [
    "SimClock",
    "Simulation",
    "SimulationDeadlock",
    "SimulationTimeLimit",
    "VirtualTimeLoop",
    "run_simulation",
]
