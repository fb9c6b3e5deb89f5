"""Uber from the blocks: location stream, geo index, matching, trips (see README.md).

``python -m examples.uber`` runs a scripted simulation; ``run_session`` is the same from code.
"""

from examples.uber.dispatch import Dispatcher, DriverApp, RideOutcome
from examples.uber.geo import GeoIndex, encode, haversine_m
from examples.uber.session import UberReport, run_session

__all__ = [
    "Dispatcher",
    "DriverApp",
    "GeoIndex",
    "RideOutcome",
    "UberReport",
    "encode",
    "haversine_m",
    "run_session",
]
