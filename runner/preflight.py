"""The runner's pre-flight check of a notebook's parameter values, with the stage's own checks.

Each stage notebook has a frozen params dataclass in ``condvest/<stage>/params.py`` whose ``check()`` the
notebook itself calls (``STAGE_PARAMS`` names it per notebook). Before a run is claimed, recorded or executed,
the runner builds that dataclass from the notebook's defaults and the run's parameters and calls the same
``check()``: a typo (``-p intervals 3,x``, ``-p date 2026-02-30``) is refused with the stage's one-line
``ParameterError`` (exit 2), and no run folder or index record is written. The checks are pure (no I/O, no
clock): checks against the run's "today" (01_fetch's ``date`` after ``as_of``) stay with the run.

A notebook without an entry (one of your own, a test's) gets the runner's generic checks only.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from condvest.errors import ParameterError

__all__ = ["STAGE_PARAMS", "check_stage_parameters", "stage_params_class"]

#: notebook stem -> ``module:class`` of the params dataclass its ``parameters`` cell mirrors (imported on use:
#: a stage's package brings pandas and its clients, which ``runner list`` never needs)
STAGE_PARAMS: dict[str, str] = {
    "01_fetch": "condvest.fetch:FetchParams",
    "02_resample": "condvest.resample:ResampleParams",
    "03_migrate": "condvest.migrate:MigrateParams",
    "04_retention": "condvest.retention:RetentionParams",
    "05_monitoring": "condvest.monitoring:MonitoringParams",
    "06_explore": "condvest.explore:ExploreParams",
}


def stage_params_class(notebook: str | Path) -> type | None:
    """The params dataclass of a stage notebook (by its file name), or ``None`` for any other notebook."""
    target = STAGE_PARAMS.get(Path(notebook).stem)
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def check_stage_parameters(notebook: str | Path, parameters: Mapping[str, Any]) -> None:
    """Check ``parameters`` (the run's ``-p`` values, typed) with the stage's own ``check()``; raises the
    stage's ``ParameterError`` naming the parameter, what is wrong and the rule. Parameters the dataclass
    does not know are left to the declared-parameter check."""
    cls = stage_params_class(notebook)
    if cls is None:
        return
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in parameters.items() if k in fields}
    try:
        value = cls(**given)
    except TypeError as exc:  # a dataclass refusing its arguments: name the stage, never a traceback
        raise ParameterError(f"{Path(notebook).stem}: {exc}") from None
    value.check()
