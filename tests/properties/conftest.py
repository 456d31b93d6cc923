"""Hypothesis profiles of the property tests (``HYPOTHESIS_PROFILE`` picks one).

- ``ci`` (default): a bounded, reproducible run (``derandomize``: the same examples every run),
  no example database, no shrinking (a failing example is reported as generated: shrinking one
  of these examples costs minutes; run with ``HYPOTHESIS_PROFILE=dev`` to shrink it).
- ``dev``: the same number of examples, random, shrunk on failure.
- ``long``: thousands of random examples per dialect and write path, shrunk on failure.

Every profile gives up the deadline (an example creates a database, backs up and restores)
and the health checks that a slow, database-backed body trips.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HTD_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW,
    phases=[Phase.explicit, Phase.generate],
)
settings.register_profile(
    "dev",
    max_examples=int(os.environ.get("HTD_PROPERTY_EXAMPLES", "50")),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("HTD_PROPERTY_EXAMPLES", "2000")),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
