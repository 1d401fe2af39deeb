"""Small display helpers the notebooks call (results for the run index, tables)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

#: the runner collects outputs of this type from an executed notebook into the run index
RESULT_MIMETYPE = "application/vnd.condvest.result+json"


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def show_result(figures: Mapping[str, Any]) -> None:
    """Record a run's result figures: shown as a small text line, kept in the run index by the runner."""
    from IPython.display import display

    data = {k: _plain(v) for k, v in figures.items()}
    display({RESULT_MIMETYPE: data, "text/plain": json.dumps(data, sort_keys=True)}, raw=True)


def progress_disable() -> bool | None:
    """tqdm's ``disable`` for long work: shown inside a Jupyter kernel (whose stderr is no terminal, so tqdm's
    automatic ``None`` would hide it), else tqdm decides (shown on a terminal, hidden in logs)."""
    return False if "ipykernel" in sys.modules else None
