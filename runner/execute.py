"""Run one notebook with papermill into a run folder (ipynb + html) and record it in the run index.

The notebook executes into a private temporary folder; the executed notebook is then scrubbed of
secrets, rendered to html and written to ``<runs>/<folder>/<run id>/<name>.ipynb|html`` through the
storage layer (a local folder or ``s3://``), so an unscrubbed copy never reaches the runs location.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condvest.errors import ParameterError, RunFailed
from condvest.params import run_id as check_run_id
from condvest.runs import append_run, new_run_id
from condvest.secret_values import secret_values
from condvest.settings import Settings
from condvest.storage import Store, open_store
from runner.images import ChartBrowser, PngCache, cell_figures, chart_figures, draws_chart
from runner.kernel import (
    RunKernelManager,
    WarmKernel,
    imports_anything,
    shutdown_now,
    skip_iri_grammar,
    started_manager,
)
from runner.notebooks import check_parameters, declared_parameters, find_project_root
from runner.notebooks import resolve_notebook as _resolve
from runner.provenance import code_version, host
from runner.render import RunHeader, StageLink, plotly_file, plotly_js, run_page, warm_up, with_header
from runner.scrub import Scrubber

log = logging.getLogger(__name__)
skip_iri_grammar()  # before nbformat is imported: ~1.4 s of grammar building saved on every command

#: a notebook records result figures by displaying a JSON object under this mimetype (merged in cell order)
RESULT_MIMETYPE = "application/vnd.condvest.result+json"
_MARKER_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


@dataclass(frozen=True)
class CellError:
    """Where and how a run failed. ``cell`` is the execution count (``In [n]`` in the executed notebook);
    ``cell_index`` is the 0-based position in the source notebook (injected cells not counted)."""

    cell: int | None
    cell_index: int | None
    source: str
    ename: str
    evalue: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "cell_index": self.cell_index,
            "source": self.source,
            "ename": self.ename,
            "evalue": self.evalue,
        }


@dataclass(frozen=True)
class RunResult:
    run_id: str
    notebook: str
    status: str  # "ok" | "failed"
    parameters: dict[str, Any]
    started_at: dt.datetime
    finished_at: dt.datetime
    ipynb_key: str | None
    html_key: str | None
    runs_uri: str
    results: dict[str, Any] = field(default_factory=dict)
    error: CellError | None = None
    pipeline: str | None = None
    pipeline_run_id: str | None = None
    stage: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def duration_s(self) -> float:
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    def summary(self) -> str:
        """One line: ``01_fetch.ipynb ok in 3.2 s: runs/<id>/01_fetch.html`` or the failing cell."""
        where = f"{self.runs_uri.rstrip('/')}/{self.html_key}" if self.html_key else "no output written"
        if self.ok:
            return f"{self.notebook} ok in {self.duration_s:.1f} s: {where}"
        e = self.error
        if e is None:
            return f"{self.notebook} failed: {where}"
        cell = f"cell {e.cell}" if e.cell is not None else "a cell"
        message = e.evalue.strip().splitlines()[0] if e.evalue.strip() else ""
        return f"{self.notebook} failed in {cell} (`{e.source}`): {e.ename}: {message} [{where}]"

    def raise_for_status(self) -> RunResult:
        if not self.ok:
            e = self.error
            cell = f"cell {e.cell} (`{e.source}`)" if e else "an unknown cell"
            raise RunFailed(
                f"{e.ename}: {e.evalue}" if e else "see the executed notebook", notebook=self.notebook, cell=cell
            )
        return self

    def index_record(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "notebook": self.notebook,
            "status": self.status,
            "parameters": self.parameters,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "finished_at": self.finished_at.isoformat(timespec="milliseconds"),
            "duration_s": self.duration_s,
            "error": self.error.as_dict() if self.error else None,
            "results": self.results,
            "ipynb": self.ipynb_key,
            "html": self.html_key,
            "pipeline": self.pipeline,
            "pipeline_run_id": self.pipeline_run_id,
            "stage": self.stage,
        }


#: seconds a cell may run unless ``RunOptions.execution_timeout`` / ``--timeout`` says otherwise (a history
#: backfill of every symbol is the longest cell; 0 or less on the command line means no limit)
DEFAULT_CELL_TIMEOUT = 4 * 3600.0


@dataclass(frozen=True)
class RunOptions:
    """How to run, the same for a notebook and for every stage of a pipeline.

    ``runs_uri``: where run folders and the index go (default: the settings'); ``run_id``: the run's (or the
    pipeline's) id instead of a new one; ``root``: the project folder (default: found from here);
    ``progress_bar``: papermill's cell progress; ``log_output``: stream cell output to the log;
    ``execution_timeout``: seconds a cell may run (default ``DEFAULT_CELL_TIMEOUT``; ``None``: no limit), so a
    cell that never returns (a hung connection) fails the run instead of holding a Batch job forever."""

    runs_uri: str | None = None
    run_id: str | None = None
    root: Path | None = None
    progress_bar: bool = True
    log_output: bool = False
    execution_timeout: float | None = DEFAULT_CELL_TIMEOUT


@dataclass(frozen=True)
class PreparedRun:
    """A notebook and its checked parameters, ready to execute (everything that can be refused, refused)."""

    path: Path
    parameters: dict[str, Any]
    kernel_name: str


def prepare(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None,
    settings: Settings,
    root: Path,
    *,
    allow_undeclared: bool = False,
) -> PreparedRun:
    """Resolve the notebook and check its parameters; raises ``ParameterError`` before anything runs."""
    path = _resolve(notebook, root)
    declared = None if allow_undeclared else declared_parameters(path)
    params = check_parameters(parameters or {}, settings.secrets(), declared, path.name)
    import nbformat

    meta = nbformat.read(path, as_version=4).metadata
    kernel = (meta.get("kernelspec") or {}).get("name") or "python3"
    return PreparedRun(path, params, kernel)


def early_kernel(notebook: str | Path, root: Path) -> WarmKernel | None:
    """The kernel of ``notebook``, started now with its imports done, while the runner imports papermill and
    checks the parameters (``None`` when the notebook cannot be found or read: ``prepare`` then says why). The
    caller discards it when the run is refused."""
    try:
        warm = WarmKernel.for_notebook(_resolve(notebook, root), root)
    except (ParameterError, OSError, ValueError):
        return None
    warm.start()
    return warm


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            text = line.strip()
            return text if len(text) <= 80 else text[:77] + "..."
    return ""


def find_failure(nb: Any, fallback: BaseException | None = None) -> CellError | None:
    """The first failing code cell of an executed notebook (an error output, or papermill's exception mark)."""
    index = -1
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if not tags & _MARKER_TAGS:
            index += 1
        if cell.cell_type != "code":
            continue
        pm = cell.get("metadata", {}).get("papermill", {})
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and not (
                out.get("ename") == "SystemExit" and str(out.get("evalue", "")) in ("", "0")
            ):
                return CellError(
                    cell.get("execution_count"),
                    None if tags & _MARKER_TAGS else index,
                    _first_line(cell.source),
                    out.get("ename", "Error"),
                    str(out.get("evalue", "")),
                )
        if pm.get("exception") is True or (fallback is not None and pm.get("status") == "running"):
            ename = type(fallback).__name__ if fallback is not None else "CellExecutionError"
            return CellError(cell.get("execution_count"), index, _first_line(cell.source), ename, str(fallback or ""))
    if fallback is not None:
        return CellError(None, None, "", type(fallback).__name__, str(fallback))
    return None


def collect_results(nb: Any) -> dict[str, Any]:
    """Merge every ``RESULT_MIMETYPE`` output of the notebook, in cell order (a later key wins)."""
    results: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get(RESULT_MIMETYPE)
            if isinstance(data, dict):
                results.update(data)
            elif data is not None:
                log.warning(
                    "result ignored mimetype=%s reason=not-a-json-object type=%s", RESULT_MIMETYPE, type(data).__name__
                )
    return results


def _scrub_json(value: Any, scrubber: Scrubber) -> Any:
    import json

    return json.loads(scrubber.text(json.dumps(value, default=str)))


def _warm_up() -> None:
    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001  only a head start: run_page says what is wrong, if anything
        log.debug("page warm-up failed error=%s", type(exc).__name__)


def execute(
    prepared: PreparedRun,
    *,
    settings: Settings,
    store: Store,
    run_id: str,
    folder: str | None,
    root: Path,
    options: RunOptions,
    pipeline: str | None = None,
    pipeline_run_id: str | None = None,
    stage: int | None = None,
    stages: int | None = None,
    neighbours: tuple[StageLink | None, StageLink | None] = (None, None),
    browser: ChartBrowser | None = None,
    kernel: WarmKernel | None = None,
    next_kernel: WarmKernel | None = None,
) -> RunResult:
    """Execute a prepared notebook, write its ipynb and html into the run folder and append the run index.

    The pages carry a header (``runner.render.RunHeader``); ``neighbours`` are the previous and next stage's
    pages of a pipeline. plotly.js is written once into the run folder (``<folder or run id>/plotly-*.js``).
    ``browser``: the chart PNGs' browser of a pipeline, shared by its stages and closed by the caller (default:
    one for this run, closed at its end). ``kernel``: this run's kernel, started ahead by the previous stage
    (``None``: papermill starts one); ``next_kernel``: the next stage's, started here once the cell after this
    notebook's imports starts."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    scrubber = Scrubber(secret_values(settings))  # secrets fetched at run time included
    name = prepared.path.name
    prefix = f"{folder}/{run_id}" if folder else run_id
    ipynb_key = f"{prefix}/{prepared.path.stem}.ipynb"
    html_key: str | None = f"{prefix}/{prepared.path.stem}.html"
    if store.exists(ipynb_key):
        raise ParameterError(f"{run_id!r} is already used by {store.url(ipynb_key)}", parameter="run_id")
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    log.info("run started run_id=%s notebook=%s parameters=%s cwd=%s", run_id, name, prepared.parameters, root)
    failure: BaseException | None = None
    own_browser = browser is None
    browser = ChartBrowser() if browser is None else browser
    threading.Thread(target=_warm_up, name="condvest-page-warm-up", daemon=True).start()  # while the cells run

    imported = False
    cache = PngCache(store, prepared.path.stem)
    # a later stage of a pipeline charts what the stages before it just wrote: its figures are new, so the
    # browser starts as its chart cell starts; a run of its own may be a re-run whose figures are unchanged,
    # so the browser starts only once a chart cell drew a figure that the notebook's latest run did not
    ahead = stage is not None and stage > 1

    def on_cell_execute(cell: Any, cell_index: int) -> None:  # nbclient's hook, as each cell starts
        nonlocal imported
        if settings.chart_png and ahead and draws_chart(cell):
            browser.start()  # comes up while the chart cell runs
        if next_kernel is not None and cell.get("cell_type") == "code":
            if imported:
                next_kernel.start()  # this notebook's work has begun: the next one's kernel starts beside it
            imported = imported or imports_anything(cell)

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:  # nbclient's hook, after a cell
        if settings.chart_png and not ahead and draws_chart(cell):
            figures = cell_figures(cell)
            if figures and not cache.has_all(figures):
                browser.start()  # comes up while the rest of the run and its page are built

    km = kernel.take() if kernel is not None else None

    try:
        with tempfile.TemporaryDirectory(prefix="condvest-run-") as tmp:
            out_path = Path(tmp) / name
            try:
                papermill.execute_notebook(
                    str(prepared.path),
                    str(out_path),
                    parameters=prepared.parameters,
                    kernel_name=prepared.kernel_name,
                    progress_bar=options.progress_bar,
                    log_output=options.log_output,
                    cwd=str(root),
                    execution_timeout=options.execution_timeout,
                    kernel_manager_class=RunKernelManager if km is None else started_manager(km),
                    on_cell_execute=on_cell_execute,
                    on_cell_executed=on_cell_executed,
                    # the outputs are in: no graceful shutdown round trip (~0.3 s); our notebooks release what
                    # they hold (lake lock, DuckDB connections) in their cells, not in atexit hooks
                    shutdown_kernel="immediate",
                )
            except PapermillExecutionError as exc:
                failure = exc
            except (Exception, KeyboardInterrupt) as exc:  # kernel died, timeout, no kernel, Ctrl-C: record the run
                failure = exc
                log.warning(
                    "run aborted run_id=%s notebook=%s error=%s",
                    run_id,
                    name,
                    scrubber.text(f"{type(exc).__name__}: {exc}"),
                )
            nb = nbformat.read(out_path, as_version=4) if out_path.exists() else None
        finished = dt.datetime.now(dt.UTC)
        error = None
        if failure is not None:
            fallback = None if isinstance(failure, PapermillExecutionError) else failure
            error = find_failure(nb, fallback) if nb is not None else find_failure(nbformat.v4.new_notebook(), failure)
            if error is not None:
                error = CellError(
                    error.cell,
                    error.cell_index,
                    scrubber.text(error.source),
                    error.ename,
                    scrubber.text(error.evalue)[:2000],
                )
        results: dict[str, Any] = {}
        if nb is not None:
            results = _scrub_json(collect_results(nb), scrubber)
            header = RunHeader(
                run_id=run_id,
                notebook=name,
                status="failed" if failure is not None else "ok",
                started_at=started,
                duration_s=round((finished - started).total_seconds(), 3),
                parameters=_scrub_json(prepared.parameters, scrubber),
                code_version=code_version(root),
                host=host(),
                pipeline=pipeline,
                pipeline_run_id=pipeline_run_id,
                stage=stage,
                stages=stages,
                previous=neighbours[0],
                next=neighbours[1] if failure is None else None,
                failing_cell=f"cell {error.cell}" if error is not None and error.cell is not None else None,
            )
            clean = with_header(scrubber.notebook(nb), header)
            figures = chart_figures(clean) if settings.chart_png else []
            pngs = [cache.get(f) for f in figures]  # unchanged figures: the latest run's PNGs
            browser.submit([f for f, png in zip(figures, pngs, strict=True) if png is None])  # while the page is built
            store.put(ipynb_key, nbformat.writes(clean).encode())
            plotly_key = f"{folder or run_id}/{plotly_file()}"
            try:
                page = run_page(
                    clean,
                    scrubber,
                    title=f"{prepared.path.stem} · {run_id}",
                    plotly_src=("../" if folder else "") + plotly_file(),
                )
            except Exception as exc:  # nbconvert/plotly trouble must not lose the run record; the ipynb is written
                log.warning("html not rendered run_id=%s notebook=%s error=%s", run_id, name, f"{type(exc).__name__}")
                html_key = None
                browser.result()  # the PNGs go with the page; a shared browser must not hand them to the next run
            else:
                store.put(html_key, page.html.encode())
                if page.figures and not store.exists(plotly_key):
                    store.put(plotly_key, plotly_js())
                if figures:
                    drawn = iter(browser.result() if None in pngs else [])  # [] when the browser could not draw them
                    keys: list[str | None] = []
                    for k, png in enumerate(pngs, start=1):
                        png = png if png is not None else next(drawn, None)
                        keys.append(f"{prefix}/{prepared.path.stem}-{k}.png" if png is not None else None)
                        if png is not None:
                            store.put(keys[-1], png)
                    cache.remember(figures, keys)
        result = RunResult(
            run_id=run_id,
            notebook=name,
            status="failed" if failure is not None else "ok",
            parameters=_scrub_json(prepared.parameters, scrubber),
            started_at=started,
            finished_at=finished,
            ipynb_key=ipynb_key if nb is not None else None,
            html_key=html_key if nb is not None else None,  # None when the html could not be rendered
            runs_uri=store.uri,
            results=results,
            error=error,
            pipeline=pipeline,
            pipeline_run_id=pipeline_run_id,
            stage=stage,
        )
        append_run(store, result.index_record())
        if isinstance(failure, KeyboardInterrupt):
            raise failure
        log.info(
            "run finished run_id=%s notebook=%s status=%s duration_s=%.1f wall_s=%.1f",
            run_id,
            name,
            result.status,
            result.duration_s,
            time.monotonic() - t0,
        )
        return result
    finally:
        if km is not None and km.has_kernel:  # a kernel started ahead that nbclient never took over
            shutdown_now(km)
        if own_browser:
            browser.close()


def run_notebook(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    options: RunOptions = RunOptions(),
) -> RunResult:
    """Run one notebook into ``<runs>/<run id>/`` (a shard: ``<runs>/<shard_group>/<run id>/``) and append the run
    index; see ``RunResult``.

    Raises ``ParameterError`` (nothing written) for an unknown notebook, a secret-looking or undeclared
    parameter, or a bad run id. A failing cell does not raise: the result has ``status == "failed"``
    (``raise_for_status()`` turns it into ``RunFailed``).
    """
    settings = settings or Settings.from_env()
    root = (options.root or find_project_root()).resolve()
    check_parameters(parameters or {}, settings.secrets(), None, str(notebook))  # the quick refusals first
    if options.run_id:
        check_run_id(options.run_id)
    warm = early_kernel(notebook, root)
    try:
        prepared = prepare(notebook, parameters, settings, root)
        run_id = check_run_id(options.run_id) if options.run_id else new_run_id(prepared.path.stem)
        store = open_store(options.runs_uri or settings.runs_uri, settings)
        group = prepared.parameters.get("shard_group") or None  # a shard's run goes beside its group's other runs
        return execute(
            prepared,
            settings=settings,
            store=store,
            run_id=run_id,
            folder=group,
            root=root,
            options=options,
            pipeline="sharded" if group else None,
            pipeline_run_id=group,
            kernel=warm,
        )
    finally:
        if warm is not None:
            warm.discard()  # a refused run's kernel (nothing once the run took it)
