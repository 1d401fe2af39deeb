"""Static PNG copies of a run's charts, beside its page: ``<notebook>-<k>.png`` for the k-th plotly chart.

For e-mail and alerts, where no script runs. Rendered by plotly's image export (kaleido) in the system's
Chromium (``BROWSER_PATH``, else ``chromium`` on the PATH), all charts of a run in one browser session.
A PNG is a copy, not the record: when no browser is there or the export fails, the run goes on and the
log says why (``CONDVEST_CHART_PNG=0`` switches the export off).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from runner.render import PLOTLY_MIMETYPE

log = logging.getLogger(__name__)


def chart_figures(nb: Any) -> list[dict[str, Any]]:
    """The plotly figures of an executed notebook, in page order."""
    return [
        dict(out["data"][PLOTLY_MIMETYPE])
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if PLOTLY_MIMETYPE in (out.get("data") or {})
    ]


def chart_pngs(figures: list[dict[str, Any]], *, width: int = 1100, height: int = 600) -> list[bytes]:
    """PNG bytes of ``figures`` (one browser session for all); ``[]`` with a warning when that is impossible."""
    if not figures:
        return []
    browser = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        log.warning("chart pngs skipped reason=%r", "no Chromium found (set BROWSER_PATH or install chromium)")
        return []
    try:
        import plotly.io as pio
    except ImportError:  # pragma: no cover - plotly is a dependency
        return []
    os.environ.setdefault("BROWSER_PATH", browser)
    with tempfile.TemporaryDirectory(prefix="condvest-png-") as tmp:
        paths = [Path(tmp) / f"{k}.png" for k in range(len(figures))]
        try:
            pio.write_images(figures, paths, format="png", width=width, height=height, validate=False)
        except Exception as exc:  # kaleido/browser trouble: the charts stay in the html page
            log.warning("chart pngs skipped reason=%r", f"{type(exc).__name__}: {exc}"[:300])
            return []
        return [p.read_bytes() for p in paths]
