"""Test-suite configuration: Hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (what ``make test`` uses) is derandomized and bounded so the whole
suite stays fast on two cores; ``dev`` (the default) explores more; ``deep`` is for long local
runs before a release.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=150, deadline=None, print_blob=True)
settings.register_profile("deep", max_examples=2_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
