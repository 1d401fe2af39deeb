"""Crash hook for fault-injection tests: ``CONDVEST_CRASH_AT=<point>`` kills the process at that point.

``crash_point("resample.after_silver")`` does nothing unless the environment variable names that point,
in which case the process ends at once with ``os._exit(CRASH_EXIT_CODE)`` (no cleanup, no finally blocks),
as a killed Batch job would. Tests run the stage in a subprocess with the variable set.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CRASH_ENV = "CONDVEST_CRASH_AT"
CRASH_EXIT_CODE = 77


def crash_point(name: str) -> None:
    """End the process now when ``CONDVEST_CRASH_AT`` equals ``name`` (read at call time)."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crash hook firing point=%s", name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(CRASH_EXIT_CODE)
