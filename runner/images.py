"""Static PNG copies of a run's charts, beside its page: ``<notebook>-<k>.png`` for the k-th plotly chart.

For e-mail and alerts, where no script runs. Rendered by kaleido in the system's Chromium (``BROWSER_PATH``,
else ``chromium`` on the PATH), all charts of a run in one browser session. A PNG is a copy, not the record:
when no browser is there or the export fails, the run goes on and the log says why (``CONDVEST_CHART_PNG=0``
switches the export off).

Starting Chromium is most of the cost (2-3 s of CPU here, several times the rendering of a chart).
``ChartBrowser`` starts it in its own thread: the runner starts it as the first cell tagged ``CHART_TAG``
starts (so it comes up while that cell reads its data, and after the heavy cells, whose memory is released by
then: the browser's ~0.45 GB never adds to a full rebuild's peak), or else once the run drew a chart, and it
renders the figures while the html page is built. MathJax is off: the charts carry no LaTeX, and kaleido would
otherwise fetch it from a CDN for every browser it starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import shutil
import threading
from typing import Any

from runner.render import PLOTLY_MIMETYPE

log = logging.getLogger(__name__)

#: the tag of a notebook cell that draws a chart: the runner starts the PNG browser as that cell starts
CHART_TAG = "chart"
#: seconds a run waits for its PNGs before it gives up on them (the page and the ipynb are written already)
PNG_TIMEOUT_S = 120.0


def chart_figures(nb: Any) -> list[dict[str, Any]]:
    """The plotly figures of an executed notebook, in page order."""
    return [
        dict(out["data"][PLOTLY_MIMETYPE])
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if PLOTLY_MIMETYPE in (out.get("data") or {})
    ]


def draws_chart(cell: Any) -> bool:
    """Whether a notebook cell is tagged ``CHART_TAG``."""
    return CHART_TAG in (cell.get("metadata", {}).get("tags") or [])


def _browser_path() -> str | None:
    return os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


class ChartBrowser:
    """One headless Chromium for a run's PNGs, started in its own thread.

    ``start()`` returns at once; ``submit(figures)`` hands over the figures (rendered as soon as the browser
    is up); ``result()`` waits for the PNG bytes (``[]`` with a warning when impossible); ``close()`` ends
    the browser, used or not. Never raises for browser trouble: the PNGs are a copy."""

    def __init__(self, *, width: int = 1100, height: int = 600, timeout_s: float = PNG_TIMEOUT_S) -> None:
        self.width, self.height, self.timeout_s = width, height, timeout_s
        self._jobs: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self._results: queue.Queue[list[bytes] | BaseException] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._skip: str | None = None
        self._submitted = False

    def start(self) -> ChartBrowser:
        if self._thread is not None or self._skip is not None:
            return self
        browser = _browser_path()
        if browser is None:
            self._skip = "no Chromium found (set BROWSER_PATH or install chromium)"
            return self
        os.environ.setdefault("BROWSER_PATH", browser)
        self._thread = threading.Thread(target=self._main, name="condvest-chart-pngs", daemon=True)
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001  the browser did not start or died: say so to result()
            self._results.put(exc)

    async def _serve(self) -> None:
        import kaleido

        async with kaleido.Kaleido(n=1, mathjax=False, timeout=self.timeout_s) as k:
            while True:
                figures = await asyncio.to_thread(self._jobs.get)
                if figures is None:
                    return
                opts = {"format": "png", "width": self.width, "height": self.height}
                try:
                    self._results.put([await k.calc_fig(f, opts=opts) for f in figures])
                except Exception as exc:  # noqa: BLE001  one bad figure: no PNGs, the run goes on
                    self._results.put(exc)

    def submit(self, figures: list[dict[str, Any]]) -> None:
        """Render ``figures`` (in order) as soon as the browser is up; starts it when not started."""
        if not figures:
            return
        self.start()
        if self._thread is not None:
            self._jobs.put(figures)
            self._submitted = True

    def result(self) -> list[bytes]:
        """The PNGs of the submitted figures, in order; ``[]`` with a warning when they could not be made."""
        if self._skip is not None:
            log.warning("chart pngs skipped reason=%r", self._skip)
            return []
        if not self._submitted:
            return []
        self._submitted = False
        try:
            out = self._results.get(timeout=self.timeout_s)
        except queue.Empty:
            out = TimeoutError(f"no PNGs after {self.timeout_s:.0f} s")
        if isinstance(out, BaseException):  # kaleido/browser trouble: the charts stay in the html page
            log.warning("chart pngs skipped reason=%r", f"{type(out).__name__}: {out}"[:300])
            return []
        return out

    def close(self) -> None:
        """End the browser (waits for it to close, at most 30 s)."""
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> ChartBrowser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def chart_pngs(figures: list[dict[str, Any]], *, width: int = 1100, height: int = 600) -> list[bytes]:
    """PNG bytes of ``figures`` (one browser session for all); ``[]`` with a warning when that is impossible."""
    if not figures:
        return []
    with ChartBrowser(width=width, height=height) as browser:
        browser.submit(figures)
        return browser.result()
