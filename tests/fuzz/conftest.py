"""Hypothesis settings of the fuzz tests: the ``ci`` profile (the default: few cases per test, a fixed seed, so the
whole folder adds about half a minute to the fast lane) and the ``long`` profile (thousands of cases, random seeds).

The long run, every fuzz test including the subprocess ones marked slow, is one command from the repository root:

    python -m pytest tests/fuzz -m "" --hypothesis-profile=long -p no:cacheprovider

``EMSEG_FUZZ_PROFILE=long`` selects the same profile where the command line cannot be changed. Each case is bounded
in time: a hypothesis ``deadline`` per in-process case, a ``timeout`` per subprocess, and the tests' own checks of
the seconds a refusal took.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(database=None, print_blob=True, phases=[p for p in Phase if p is not Phase.explain],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=12, deadline=5000, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=600, deadline=20000, **_COMMON)



def few() -> int:
    """Cases of a test that starts a subprocess per case (seconds each): 2 in ``ci``, 40 in ``long``."""
    return max(2, settings.default.max_examples // 15)


def pytest_configure(config) -> None:
    chosen = config.getoption("hypothesis_profile", None) or os.environ.get("EMSEG_FUZZ_PROFILE")
    settings.load_profile(chosen or "ci")
