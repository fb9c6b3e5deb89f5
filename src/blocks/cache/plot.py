"""Hit-ratio curves as a PNG (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blocks.cache.simulate import SimulationResult
from blocks.core.errors import FailedPrecondition

__all__ = ["plot_hit_ratios"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FailedPrecondition("plotting needs matplotlib: pip install matplotlib") from None
    return plt


def plot_hit_ratios(path: str | Path, results: Sequence[SimulationResult], *, title: str) -> None:
    """One line per policy: hit ratio (percent) against cache size."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for policy in dict.fromkeys(result.policy for result in results):
        points = sorted((r.size, 100.0 * r.hit_ratio) for r in results if r.policy == policy)
        style = "--" if policy == "optimal" else "-"
        axes.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=policy)
    axes.set_title(title)
    axes.set_xlabel("cache size (entries)")
    axes.set_ylabel("hit ratio (%)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
