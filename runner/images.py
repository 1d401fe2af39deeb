"""Static PNG copies of a run's charts, beside its page: ``<notebook>-<k>.png`` for the k-th plotly chart.

For e-mail and alerts, where no script runs. Rendered by kaleido in the system's Chromium (``BROWSER_PATH``,
else ``chromium`` on the PATH), all charts of a run in one browser session. A PNG is a copy, not the record:
when no browser is there or the export fails, the run goes on and the log says why (``CONDVEST_CHART_PNG=0``
switches the export off).

Starting the browser is most of the cost, and most of that is parsing plotly.js: the browser loads plotly.js's
*finance* bundle (``runner/static``: bar, candlestick, ohlc, scatter, histogram, pie, ... every trace type our
notebooks draw), a fraction of the full bundle's size, so it starts in about half the time (BENCHMARKS.md has
the figures). A figure with another trace type (a heatmap drawn in a notebook of one's own) is rendered by a
second browser with the full bundle, started only then. The vendored bundle is the version of plotly.js that
the plotly package ships; ``tools/vendor_plotly.py`` refreshes it after a plotly upgrade.

``ChartBrowser`` starts the browser in its own thread, after the heavy cells (whose memory is released by then:
the browser's memory never adds to a full rebuild's peak), and it renders the figures while the html page is
built. In a pipeline's later stages, which chart what the stages before them just wrote, it starts as the first
cell tagged ``CHART_TAG`` starts (it comes up while that cell reads its data); a pipeline's stages share one
browser. A run of its own may be a re-run with nothing new: ``PngCache`` knows the figures of the notebook's
latest run, and the browser starts only once a tagged cell drew a figure that run did not (else once the run
drew a chart); unchanged figures get that run's PNGs, copied, and a run whose figures are all unchanged starts no
browser at all (a nothing-new 02_resample; BENCHMARKS.md). MathJax is off: the charts carry no LaTeX, and kaleido would
otherwise fetch it from a CDN for every browser it starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from condvest.errors import ObjectNotFound
from condvest.storage import Store
from runner.render import PLOTLY_MIMETYPE

log = logging.getLogger(__name__)

#: the tag of a notebook cell that draws a chart: the runner starts the PNG browser as that cell starts
CHART_TAG = "chart"
#: seconds a run waits for its PNGs before it gives up on them (the page and the ipynb are written already)
PNG_TIMEOUT_S = 120.0
#: plotly.js's finance bundle (MIT, ``runner/static/LICENSE.plotly.txt``; ``tools/vendor_plotly.py`` writes it) and
#: the trace types it draws
FINANCE_PLOTLYJS = Path(__file__).resolve().parent / "static" / "plotly-finance.min.js"
FINANCE_TRACES = frozenset(
    {"bar", "candlestick", "funnel", "funnelarea", "histogram", "indicator", "ohlc", "pie", "scatter", "waterfall"}
)


def finance_plotlyjs_version(path: Path = FINANCE_PLOTLYJS) -> str | None:
    """The plotly.js version of a finance bundle, as its banner names it (``None``: no bundle, or no version)."""
    try:
        with path.open("rb") as f:
            head = f.read(200).decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r"plotly\.js \(finance - minified\) v(\S+)", head)
    return m.group(1) if m else None


def needs_full_plotlyjs(figure: dict[str, Any]) -> bool:
    """Whether ``figure`` has a trace type that the finance bundle cannot draw (a trace's type defaults to scatter)."""
    return any(t.get("type", "scatter") not in FINANCE_TRACES for t in figure.get("data") or [])


def chart_figures(nb: Any) -> list[dict[str, Any]]:
    """The plotly figures of an executed notebook, in page order."""
    return [figure for cell in nb.cells for figure in cell_figures(cell)]


def cell_figures(cell: Any) -> list[dict[str, Any]]:
    """The plotly figures among one executed cell's outputs."""
    outputs = cell.get("outputs", [])
    return [dict(out["data"][PLOTLY_MIMETYPE]) for out in outputs if PLOTLY_MIMETYPE in (out.get("data") or {})]


#: the runs store's folder of PNG pointers: ``png-cache/<notebook stem>.json`` maps figure hashes to the PNGs
#: the notebook's latest run wrote for them
PNG_CACHE_PREFIX = "png-cache"


class PngCache:
    """The PNGs of a notebook's latest run, by figure hash, so that a run whose figure did not change (a re-run
    with nothing new) copies its PNG instead of starting a browser to draw the same picture again.

    The hash covers the figure's JSON, the PNG's size, the plotly.js bundle and kaleido's version. The pointer
    file is replaced by each run (it names that run's PNGs only, so it stays small); a pointer whose PNG is gone
    (its run folder was removed) or an unreadable pointer file is a miss, never an error."""

    def __init__(self, store: Store, notebook: str, *, width: int = 1100, height: int = 600) -> None:
        self.store, self.key = store, f"{PNG_CACHE_PREFIX}/{notebook}.json"
        bundle = f"plotly-finance-{finance_plotlyjs_version()}.min.js"
        self._salt = f"{width}x{height} {bundle} kaleido {_kaleido_version()}\n".encode()
        self._known: dict[str, str] | None = None

    def hash(self, figure: dict[str, Any]) -> str:
        body = json.dumps(figure, sort_keys=True, separators=(",", ":"), default=str).encode()
        return hashlib.sha256(self._salt + body).hexdigest()

    def known(self) -> dict[str, str]:
        """Figure hash -> runs-store key of its PNG, as the notebook's latest run left them (read once)."""
        if self._known is None:
            try:
                doc = json.loads(self.store.get(self.key))
                self._known = {str(h): str(k) for h, k in doc.items()} if isinstance(doc, dict) else {}
            except (ObjectNotFound, ValueError):
                self._known = {}
        return self._known

    def has_all(self, figures: list[dict[str, Any]]) -> bool:
        return all(self.hash(f) in self.known() for f in figures)

    def get(self, figure: dict[str, Any]) -> bytes | None:
        """The PNG drawn for the same figure by the notebook's latest run, or ``None``."""
        key = self.known().get(self.hash(figure))
        if key is None:
            return None
        try:
            return self.store.get(key)
        except ObjectNotFound:
            return None

    def remember(self, figures: list[dict[str, Any]], keys: list[str | None]) -> None:
        """This run's PNGs (``None``: not written) become the ones the next run can reuse."""
        doc = {self.hash(f): k for f, k in zip(figures, keys, strict=True) if k is not None}
        if doc and doc != self.known():
            self.store.put(self.key, json.dumps(doc, indent=1).encode())


def _kaleido_version() -> str:
    try:
        return metadata.version("kaleido")
    except metadata.PackageNotFoundError:
        return "none"


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

        small = FINANCE_PLOTLYJS if FINANCE_PLOTLYJS.is_file() else None
        full: kaleido.Kaleido | None = None
        opts = {"format": "png", "width": self.width, "height": self.height}
        try:
            async with kaleido.Kaleido(n=1, mathjax=False, timeout=self.timeout_s, plotlyjs=small) as k:
                while True:
                    figures = await asyncio.to_thread(self._jobs.get)
                    if figures is None:
                        return
                    try:
                        out = []
                        for f in figures:
                            if small is not None and needs_full_plotlyjs(f):
                                if full is None:  # a trace type beyond the finance bundle: the full one, once
                                    full = kaleido.Kaleido(n=1, mathjax=False, timeout=self.timeout_s)
                                    await full.open()
                                out.append(await full.calc_fig(f, opts=opts))
                            else:
                                out.append(await k.calc_fig(f, opts=opts))
                        self._results.put(out)
                    except Exception as exc:  # noqa: BLE001  one bad figure: no PNGs, the run goes on
                        self._results.put(exc)
        finally:
            if full is not None:
                await full.close()

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
