"""Publish an executed notebook into its run folder and the run index: scrubbed of secrets, with the run's header,
as ipynb and html (plotly.js written once for the whole store, ``static/``, the charts' PNGs drawn or copied from
the latest run's) in ``<runs>/<folder>/<run id>/<stem>.ipynb|html|-k.png``, then one record appended to the index
and ``<runs>/index.html`` rewritten (``runner.browse``).

Everything is scrubbed before it is written, so an unscrubbed copy never reaches the runs location.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from condvest.errors import ParameterError
from condvest.runs import append_run
from condvest.storage import Store
from runner.browse import INDEX_PAGE, write_browse_pages
from runner.context import StageContext
from runner.images import ChartBrowser, PngCache, chart_figures
from runner.provenance import code_version, host
from runner.render import RunHeader, executed_page_cells, plotly_js, plotly_key, plotly_src_for, run_page, with_header
from runner.result import CellError, Execution, RunResult, collect_results
from runner.scrub import Scrubber
from runner.usage import UsageMeter, usage_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFolder:
    """Where one run's files go in the runs store: ``<folder>/<run id>/`` (``folder``: a pipeline's or a sharded
    run's id, ``None`` for a run of its own), each named after the notebook (``notebook``: its file name)."""

    store: Store
    run_id: str
    notebook: str
    folder: str | None = None
    attempt: int = 1  # a retry's files are ``<stem>.attempt-<n>.*`` beside the first attempt's

    @property
    def stem(self) -> str:
        return Path(self.notebook).stem

    @property
    def file_stem(self) -> str:
        return self.stem if self.attempt <= 1 else f"{self.stem}.attempt-{self.attempt}"

    @property
    def prefix(self) -> str:
        return f"{self.folder}/{self.run_id}" if self.folder else self.run_id

    @property
    def ipynb_key(self) -> str:
        return f"{self.prefix}/{self.file_stem}.ipynb"

    @property
    def html_key(self) -> str:
        return f"{self.prefix}/{self.file_stem}.html"

    def png_key(self, k: int) -> str:
        """The k-th chart's PNG (1-based, in page order)."""
        return f"{self.prefix}/{self.file_stem}-{k}.png"

    @property
    def title(self) -> str:
        """The page's title: ``<stem> · <run id>`` (`` · attempt <n>`` for a retry)."""
        return f"{self.stem} · {self.run_id}" + (f" · attempt {self.attempt}" if self.attempt > 1 else "")

    @property
    def plotly_key(self) -> str:
        """plotly.js, once for the whole runs store (``static/plotly-<version>.min.js``): the pages reference it
        relatively, so ``runs/`` grows by the pages, not by a copy per run."""
        return plotly_key()

    @property
    def plotly_src(self) -> str:
        return plotly_src_for(self.html_key)

    def claim(self) -> None:
        """Refuse a run id that this attempt of a run of this notebook already used here (``ParameterError``,
        nothing written); a retry (attempt 2, 3, ...) of the same run id has files of its own."""
        if self.store.exists(self.ipynb_key):
            attempt = f" attempt {self.attempt}" if self.attempt > 1 else ""
            raise ParameterError(
                f"{self.run_id!r}{attempt} is already used by {self.store.url(self.ipynb_key)}", parameter="run_id"
            )


@dataclass(frozen=True)
class ChartPngs:
    """The PNG copies of a run's charts: ``enabled`` (the settings' ``chart_png``), drawn by ``browser`` or, for
    a figure the notebook's latest run drew already, copied from ``cache``."""

    enabled: bool
    browser: ChartBrowser
    cache: PngCache


def scrub_json(value: Any, scrubber: Scrubber) -> Any:
    """``value`` (JSON-like) with every secret masked."""
    return json.loads(scrubber.text(json.dumps(value, default=str)))


def scrubbed_error(execution: Execution, scrubber: Scrubber) -> CellError | None:
    """The failing cell, its source and message scrubbed (the message cut at 2,000 characters)."""
    e = execution.error()
    if e is None:
        return None
    return replace(e, source=scrubber.text(e.source), evalue=scrubber.text(e.evalue)[:2000], line=scrubber.text(e.line))


def publish(
    execution: Execution,
    run: RunFolder,
    parameters: dict[str, Any],
    *,
    scrubber: Scrubber,
    context: StageContext,
    pngs: ChartPngs,
    root: Path,
    usage: UsageMeter | None = None,
) -> RunResult:
    """Write the executed notebook's ipynb, html and PNGs into ``run`` (nothing when no notebook was written) and
    append the run to the index; returns the run's result."""
    error = scrubbed_error(execution, scrubber)
    params = scrub_json(parameters, scrubber)
    results: dict[str, Any] = {}
    ipynb_key = html_key = None
    if execution.nb is not None:
        results = scrub_json(collect_results(execution.nb), scrubber)
        header = _header(execution, run, params, error, context, root)
        clean = with_header(executed_page_cells(scrubber.notebook(execution.nb)), header)
        ipynb_key, html_key = _write_pages(clean, run, scrubber, pngs)
    result = RunResult(
        run_id=run.run_id,
        notebook=run.notebook,
        status=execution.status,
        parameters=params,
        started_at=execution.started,
        finished_at=execution.finished,
        ipynb_key=ipynb_key,
        html_key=html_key,  # None when the html could not be rendered
        runs_uri=run.store.uri,
        results=results,
        error=error,
        pipeline=context.pipeline,
        pipeline_run_id=context.pipeline_run_id,
        stage=context.stage,
        attempt=run.attempt,
        **usage_fields(usage),  # vcpu_seconds, gb_seconds, up to here (runner.usage)
    )
    append_run(run.store, result.index_record())
    if execution.status != "ok" or not _one_of_many_shards(params):  # the commit rewrites them for its shards
        write_browse_pages(run.store, context.pipeline_run_id)  # runs/index.html and the pipeline's overview page
    return result


def _one_of_many_shards(parameters: dict[str, Any]) -> bool:
    """Whether the run is one shard of a sharded stage (``shard`` ``I/N``, not ``commit/N``): with thousands of
    shards, each rewriting the browse pages from every record would be quadratic traffic, so a shard that
    succeeds leaves them to its commit (a failed one rewrites them: its commit will not run)."""
    shard = str(parameters.get("shard") or "")
    return bool(shard) and not shard.strip().startswith("commit")


def _header(
    execution: Execution,
    run: RunFolder,
    params: dict[str, Any],
    error: CellError | None,
    context: StageContext,
    root: Path,
) -> RunHeader:
    return RunHeader(
        run_id=run.run_id,
        notebook=run.notebook,
        status=execution.status,
        started_at=execution.started,
        duration_s=round((execution.finished - execution.started).total_seconds(), 3),
        parameters=params,
        code_version=code_version(root),
        host=host(),
        pipeline=context.pipeline,
        pipeline_run_id=context.pipeline_run_id,
        stage=context.stage,
        stages=context.stages,
        previous=context.previous,
        next=context.next if execution.failure is None else None,
        failing_cell=_failing_cell(error),
        attempt=run.attempt,
        error=_error_text(error),
        error_line=(error.line or error.source or None) if error is not None else None,
        failing_cell_id=error.cell_id if error is not None else None,
        runs_index="../" * run.html_key.count("/") + INDEX_PAGE,
        pipeline_index=f"../{INDEX_PAGE}" if run.folder else None,
    )


def _failing_cell(error: CellError | None) -> str | None:
    """``cell 4, line 2`` (the line when the traceback names it), or ``None``."""
    if error is None or error.cell is None:
        return None
    return f"cell {error.cell}" + (f", line {error.lineno}" if error.lineno is not None else "")


def _error_text(error: CellError | None) -> str | None:
    """``ZeroDivisionError: division by zero`` (the message's first line), or ``None``."""
    if error is None:
        return None
    message = error.evalue.strip().splitlines()[0] if error.evalue.strip() else ""
    return f"{error.ename}: {message}" if message else error.ename


def _write_pages(clean: Any, run: RunFolder, scrubber: Scrubber, pngs: ChartPngs) -> tuple[str, str | None]:
    """Write the (scrubbed, headed) notebook, its html page, plotly.js and the charts' PNGs; returns the ipynb's
    and the page's keys (the page's ``None`` when it could not be rendered: the ipynb is the record)."""
    import nbformat

    figures = chart_figures(clean) if pngs.enabled else []
    copies = [pngs.cache.get(f) for f in figures]  # unchanged figures: the latest run's PNGs
    pngs.browser.submit([f for f, png in zip(figures, copies, strict=True) if png is None])  # while the page is built
    run.store.put(run.ipynb_key, nbformat.writes(clean).encode())
    try:
        page = run_page(clean, scrubber, title=run.title, plotly_src=run.plotly_src)
    except Exception as exc:  # nbconvert/plotly trouble must not lose the run record; the ipynb is written
        log.warning("html not rendered run_id=%s notebook=%s error=%s", run.run_id, run.notebook, type(exc).__name__)
        pngs.browser.result()  # the PNGs go with the page; a shared browser must not hand them to the next run
        return run.ipynb_key, None
    run.store.put(run.html_key, page.html.encode())
    if page.figures and not run.store.exists(run.plotly_key):
        run.store.put(run.plotly_key, plotly_js())
    if figures:
        _write_pngs(figures, copies, run, pngs)
    return run.ipynb_key, run.html_key


def _write_pngs(figures: list[dict[str, Any]], copies: list[bytes | None], run: RunFolder, pngs: ChartPngs) -> None:
    """Write ``<stem>-<k>.png`` for each chart: its copy, else the browser's drawing (none when it could not draw)."""
    drawn = iter(pngs.browser.result() if None in copies else [])  # [] when the browser could not draw them
    keys: list[str | None] = []
    for k, png in enumerate(copies, start=1):
        png = png if png is not None else next(drawn, None)
        keys.append(run.png_key(k) if png is not None else None)
        if png is not None:
            run.store.put(run.png_key(k), png)
    pngs.cache.remember(figures, keys)
