"""A geohash grid of drivers, answering "the k nearest free drivers to this point" (pure).

Theory of operation. A geohash of precision ``p`` names a cell of a fixed grid: ``5p`` bits
alternately halve longitude and latitude, so every cell of that precision has the same size in
degrees (``cell_size``) and a cell is also a (row, column) pair. Prefixes nest: the 4-character
hash of a point is the prefix of its 6-character hash, which is what lets the pub-sub topic be
partitioned by a coarse cell (or a city) while the index uses fine ones.

``GeoIndex`` keeps each driver's last position, the set of drivers in each fine cell, and
whether the driver is free. ``nearest`` is exact: it searches a radius ``r`` (starting at one
cell, doubling up to ``radius_m_max``) by visiting every cell that intersects the lat/lon box
that provably contains every point within ``r`` metres (see ``_box``), measures candidates with
the haversine formula, and stops once ``k`` candidates lie within ``r``; those are then the
``k`` nearest of all, because any closer driver would also be within ``r``. Work is bounded by
``CELLS_SCAN_MAX`` per query. Location updates carry a per-driver sequence number, so a
duplicated or reordered update from the stream never moves a driver back in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument, NotFound

__all__ = [
    "CELLS_SCAN_MAX",
    "LATITUDE_MAX",
    "DriverPosition",
    "GeoIndex",
    "cell_size",
    "encode",
    "haversine_m",
]

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
EARTH_RADIUS_M = 6_371_008.8
LATITUDE_MAX = 85.0
"""The index refuses points nearer the poles, where longitude boxes stop being useful."""
PRECISION_MAX = 9
CELLS_SCAN_MAX = 4096
DRIVERS_MAX = 1_000_000


def encode(lat: float, lon: float, precision: int) -> str:
    """The geohash of a point: ``precision`` base-32 characters."""
    _check_point(lat, lon)
    if not 1 <= precision <= 12:
        raise InvalidArgument("precision must be in [1, 12]")
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    chars: list[str] = []
    bits, value, even = 0, 0, True
    while len(chars) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            value, lon_lo, lon_hi = (
                (value * 2 + 1, mid, lon_hi) if lon >= mid else (value * 2, lon_lo, mid)
            )
        else:
            mid = (lat_lo + lat_hi) / 2
            value, lat_lo, lat_hi = (
                (value * 2 + 1, mid, lat_hi) if lat >= mid else (value * 2, lat_lo, mid)
            )
        even = not even
        bits += 1
        if bits == 5:
            chars.append(BASE32[value])
            bits, value = 0, 0
    return "".join(chars)


def cell_size(precision: int) -> tuple[float, float]:
    """(height in degrees of latitude, width in degrees of longitude) of a cell."""
    lon_bits = (5 * precision + 1) // 2
    lat_bits = 5 * precision // 2
    return 180.0 / 2**lat_bits, 360.0 / 2**lon_bits


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _check_point(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise InvalidArgument("coordinates must be finite numbers")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InvalidArgument(f"({lat}, {lon}) is not a point on Earth")


def _box(lat: float, radius_m: float) -> tuple[float, float]:
    """Half-height and half-width (degrees) of a box holding every point within radius_m.

    Latitude: a distance d moves latitude by at most d/R radians. Longitude: with both
    latitudes at most phi_max from the equator, haversine gives
    d >= 2R asin(cos(phi_max) sin(dlon/2)), so dlon <= 2 asin(sin(d/2R) / cos(phi_max)).
    """
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    phi_max = math.radians(min(90.0, abs(lat) + dlat))
    ratio = math.sin(radius_m / (2 * EARTH_RADIUS_M)) / max(math.cos(phi_max), 1e-12)
    dlon = 180.0 if ratio >= 1.0 else math.degrees(2 * math.asin(ratio))
    return dlat, dlon


@dataclass(frozen=True, slots=True)
class DriverPosition:
    driver: str
    lat: float
    lon: float
    cell: str
    sequence: int
    free: bool


class GeoIndex:
    """Drivers on a geohash grid; see the module docstring."""

    def __init__(self, precision: int = 6, *, radius_m_max: float = 20_000.0) -> None:
        if not 1 <= precision <= PRECISION_MAX or radius_m_max <= 0:
            raise InvalidArgument(f"precision in [1, {PRECISION_MAX}], radius_m_max > 0")
        self.precision = precision
        self.radius_m_max = radius_m_max
        self._height, self._width = cell_size(precision)
        self._drivers: dict[str, DriverPosition] = {}
        self._cells: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._drivers)

    def position(self, driver: str) -> DriverPosition:
        try:
            return self._drivers[driver]
        except KeyError:
            raise NotFound(f"no driver {driver!r}") from None

    def update(self, driver: str, lat: float, lon: float, sequence: int) -> bool:
        """Move ``driver``; False (and nothing changes) if ``sequence`` is not newer."""
        _check_point(lat, lon)
        if abs(lat) > LATITUDE_MAX:
            raise InvalidArgument(f"latitudes beyond +-{LATITUDE_MAX} are not served")
        old = self._drivers.get(driver)
        if old is not None and sequence <= old.sequence:
            return False
        if old is None and len(self._drivers) >= DRIVERS_MAX:
            raise InvalidArgument(f"at most {DRIVERS_MAX} drivers")
        cell = encode(lat, lon, self.precision)
        free = True if old is None else old.free
        if old is not None and old.cell != cell:
            self._leave(driver, old.cell)
        self._cells.setdefault(cell, set()).add(driver)
        self._drivers[driver] = DriverPosition(driver, lat, lon, cell, sequence, free)
        return True

    def _leave(self, driver: str, cell: str) -> None:
        members = self._cells[cell]
        members.discard(driver)
        if not members:
            del self._cells[cell]

    def remove(self, driver: str) -> None:
        old = self.position(driver)
        self._leave(driver, old.cell)
        del self._drivers[driver]

    def set_free(self, driver: str, free: bool) -> None:
        old = self.position(driver)
        self._drivers[driver] = DriverPosition(
            driver, old.lat, old.lon, old.cell, old.sequence, free
        )

    def nearest(
        self, lat: float, lon: float, k: int = 1, *, free_only: bool = True
    ) -> list[tuple[str, float]]:
        """Up to ``k`` drivers within ``radius_m_max``, nearest first: ``(driver, metres)``.

        Ties in distance are broken by driver name, so the answer is deterministic."""
        _check_point(lat, lon)
        if not 1 <= k <= 1000:
            raise InvalidArgument("k must be in [1, 1000]")
        radius = min(self.radius_m_max, max(self._height, self._width) * 111_000.0)
        while True:
            found = self._within(lat, lon, radius, free_only)
            if len(found) >= k or radius >= self.radius_m_max:
                return found[:k]
            radius = min(self.radius_m_max, radius * 2)

    def _within(
        self, lat: float, lon: float, radius_m: float, free_only: bool
    ) -> list[tuple[str, float]]:
        found: list[tuple[float, str]] = []
        for cell in self._cells_near(lat, lon, radius_m):
            for driver in self._cells.get(cell, ()):
                where = self._drivers[driver]
                if free_only and not where.free:
                    continue
                distance = haversine_m(lat, lon, where.lat, where.lon)
                if distance <= radius_m:
                    found.append((distance, driver))
        found.sort()
        return [(driver, distance) for distance, driver in found]

    def _cells_near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """Geohashes of every cell meeting the box around the point (bounded)."""
        dlat, dlon = _box(lat, radius_m)
        rows = range(self._row(max(-90.0, lat - dlat)), self._row(min(90.0, lat + dlat)) + 1)
        columns_total = round(360.0 / self._width)
        if dlon >= 180.0:
            columns = list(range(columns_total))
        else:
            first, last = self._column(lon - dlon), self._column(lon + dlon)
            count = (last - first) % columns_total + 1
            columns = [(first + i) % columns_total for i in range(count)]
        if len(rows) * len(columns) > CELLS_SCAN_MAX:
            if len(self._cells) <= CELLS_SCAN_MAX:
                return list(self._cells)  # fewer occupied cells than cells to visit
            raise InvalidArgument("search area too large for this grid; lower radius_m_max")
        return [
            encode(
                min(90.0, -90.0 + (row + 0.5) * self._height),
                -180.0 + (column + 0.5) * self._width,
                self.precision,
            )
            for row in rows
            for column in columns
        ]

    def _row(self, lat: float) -> int:
        rows_total = round(180.0 / self._height)
        return min(rows_total - 1, int((lat + 90.0) // self._height))

    def _column(self, lon: float) -> int:
        columns_total = round(360.0 / self._width)
        return int(((lon + 180.0) % 360.0) // self._width) % columns_total
