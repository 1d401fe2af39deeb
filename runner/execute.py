"""Run one notebook: execute it with papermill, then publish it (``runner.publish``) into a run folder and the run
index; the result model is ``runner.result``.

``execute`` reads as its steps: claim the run (its ``running`` index record and its folder, so that even a runner
killed with SIGKILL leaves a trace, listed as ``killed``), run the notebook in its kernel (a private temporary folder
holds the executed notebook) while a ``CellObserver`` starts the chart browser and the next stage's kernel at
the right cells, then publish (scrubbed of secrets first, so an unscrubbed copy never reaches the runs location).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condvest.errors import ParameterError
from condvest.params import run_id as check_run_id
from condvest.processes import this_process
from condvest.runs import RunningRecord, claim_run, new_run_id
from condvest.secret_values import secret_values
from condvest.settings import Settings
from condvest.storage import Store, open_store
from runner.context import StageContext
from runner.images import ChartBrowser, PngCache, cell_figures, draws_chart
from runner.kernel import ENGINE_NAME, RunKernelManager, WarmKernel, imports_anything, shutdown_now, skip_iri_grammar
from runner.notebooks import check_parameters, declared_parameters, find_project_root
from runner.notebooks import resolve_notebook as _resolve
from runner.preflight import check_stage_parameters
from runner.publish import ChartPngs, RunFolder, publish, scrub_json
from runner.render import warm_up
from runner.result import RESULT_MIMETYPE, CellError, Execution, RunResult, collect_results, find_failure
from runner.scrub import Scrubber
from runner.usage import UsageMeter

__all__ = [
    "DEFAULT_CELL_TIMEOUT",
    "RESULT_MIMETYPE",
    "CellError",
    "CellObserver",
    "PreparedRun",
    "claim",
    "RunOptions",
    "RunResult",
    "StageContext",
    "collect_results",
    "early_kernel",
    "execute",
    "find_failure",
    "prepare",
    "run_notebook",
]

log = logging.getLogger(__name__)
skip_iri_grammar()  # before nbformat is imported (runner.kernel says why; BENCHMARKS.md has the figures)

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
    cell that never returns (a hung connection) fails the run instead of holding a Batch job forever; ``attempt``:
    which try of ``run_id`` this is (a Batch retry: attempt 2 runs as attempt 2 of the same run, its files beside
    the first attempt's)."""

    runs_uri: str | None = None
    run_id: str | None = None
    root: Path | None = None
    progress_bar: bool = True
    log_output: bool = False
    execution_timeout: float | None = DEFAULT_CELL_TIMEOUT
    attempt: int = 1


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
    check_stage_parameters(path, params)  # the stage's own checks: a typo is refused, no run recorded
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


class CellObserver:
    """nbclient's cell hooks of one run (``hooks()``: ``on_cell_execute``, ``on_cell_executed``), which start the
    chart browser and the next stage's kernel at the right cells.

    A later stage of a pipeline charts what the stages before it just wrote: its figures are new, so the browser
    starts as its first chart cell starts (it comes up while that cell reads its data). A run of its own may be a
    re-run whose figures are unchanged, so the browser starts only once a chart cell drew a figure that the
    notebook's latest run did not. The next stage's kernel starts as the first code cell after this notebook's
    imports starts: this notebook's work has begun, and the next kernel's start and imports run beside it."""

    def __init__(self, pngs: ChartPngs, context: StageContext) -> None:
        self.pngs, self.ahead, self.next_kernel = pngs, context.charts_ahead, context.next_kernel
        self._imported = False

    def hooks(self) -> dict[str, Any]:
        return {"on_cell_execute": self.on_cell_execute, "on_cell_executed": self.on_cell_executed}

    def on_cell_execute(self, cell: Any, cell_index: int, **_: Any) -> None:
        """As a cell starts."""
        if self.pngs.enabled and self.ahead and draws_chart(cell):
            self.pngs.browser.start()
        if self.next_kernel is not None and cell.get("cell_type") == "code":
            if self._imported:
                self.next_kernel.start()
            self._imported = self._imported or imports_anything(cell)

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any = None, **_: Any) -> None:
        """As a cell has run."""
        if self.pngs.enabled and not self.ahead and draws_chart(cell):
            figures = cell_figures(cell)
            if figures and not self.pngs.cache.has_all(figures):
                self.pngs.browser.start()  # comes up while the rest of the run and its page are built


def _warm_up_pages() -> None:
    """Import nbconvert and compile its templates in a thread while the cells run (only a head start)."""

    def warm() -> None:
        try:
            warm_up()
        except Exception as exc:  # noqa: BLE001  run_page says what is wrong, if anything
            log.debug("page warm-up failed error=%s", type(exc).__name__)

    threading.Thread(target=warm, name="condvest-page-warm-up", daemon=True).start()


def _papermill(
    prepared: PreparedRun,
    out_path: Path,
    root: Path,
    options: RunOptions,
    observer: CellObserver,
    km: RunKernelManager | None,
) -> None:
    """papermill's ``execute_notebook`` through the runner's engine (``runner.engine``, which papermill registers
    from the ``papermill.engine`` entry point as it is imported), in ``km``'s kernel."""
    import papermill

    papermill.execute_notebook(
        str(prepared.path),
        str(out_path),
        parameters=prepared.parameters,
        kernel_name=prepared.kernel_name,
        engine_name=ENGINE_NAME,
        km=km,
        progress_bar=options.progress_bar,
        log_output=options.log_output,
        cwd=str(root),
        execution_timeout=options.execution_timeout,
        **observer.hooks(),
    )


def run_cells(
    prepared: PreparedRun,
    *,
    root: Path,
    options: RunOptions,
    observer: CellObserver,
    km: RunKernelManager | None,
    started: dt.datetime,
) -> Execution:
    """Execute the notebook into a private temporary folder and read it back; a failure is recorded, not raised
    (a failing cell; the kernel died, a cell timed out, no kernel, Ctrl-C: ``aborted``)."""
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    failure: BaseException | None = None
    aborted = False
    with tempfile.TemporaryDirectory(prefix="condvest-run-") as tmp:
        out_path = Path(tmp) / prepared.path.name
        try:
            _papermill(prepared, out_path, root, options, observer, km)
        except PapermillExecutionError as exc:
            failure = exc
        except (Exception, KeyboardInterrupt) as exc:
            failure, aborted = exc, True
        nb = nbformat.read(out_path, as_version=4) if out_path.exists() else None
    return Execution(nb, started, dt.datetime.now(dt.UTC), failure, aborted)


def _placeholder(run: RunFolder, started: dt.datetime, me: dict[str, Any]) -> str:
    """The page a run folder holds while its notebook runs (replaced by the executed notebook's page)."""
    title = html.escape(f"{run.title} · running")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>\n"
        f"<h1>{title}</h1>\n<p>Started {html.escape(started.isoformat(timespec='seconds'))} on "
        f"{html.escape(str(me['host']))} (pid {me['pid']}). The executed notebook replaces this page when the run "
        "ends. If it is still here, the run is still going or was killed: "
        f"<code>python -m runner show {html.escape(run.run_id)}</code> says which.</p>\n</body></html>\n"
    )


def claim(
    run: RunFolder, prepared: PreparedRun, scrubber: Scrubber, context: StageContext, started: dt.datetime
) -> RunningRecord:
    """Leave the run's trace before its notebook starts: its index record (status ``running``, with host and pid;
    ``ParameterError`` when the run id is used already, nothing written) and its folder (a placeholder page); returns
    the started heartbeat that keeps the record fresh (``condvest.runs.RunningRecord``), stopped by the caller."""
    run.claim()
    me = this_process()
    record = {
        "run_id": run.run_id,
        "notebook": run.notebook,
        "status": "running",
        "parameters": scrub_json(prepared.parameters, scrubber),
        "started_at": started.isoformat(timespec="milliseconds"),
        "finished_at": None,
        "duration_s": None,
        "error": None,
        "results": {},
        "ipynb": None,
        "html": run.html_key,
        "pipeline": context.pipeline,
        "pipeline_run_id": context.pipeline_run_id,
        "stage": context.stage,
        "attempt": run.attempt,
        **me,
    }
    claim_run(run.store, record)
    run.store.put(run.html_key, _placeholder(run, started, me).encode())
    return RunningRecord(run.store, record).start()


def execute(
    prepared: PreparedRun,
    *,
    settings: Settings,
    store: Store,
    run_id: str,
    root: Path,
    options: RunOptions,
    context: StageContext = StageContext(),
) -> RunResult:
    """Execute a prepared notebook, write its ipynb, html and PNGs into its run folder and its record into the run
    index (a ``running`` record and the folder are written before the notebook starts: ``claim``).

    ``context``: the run's place in its pipeline (``StageContext``: the header's pipeline, stage and links, the
    shared chart browser, the kernels started ahead); the default is a run of its own. Raises ``ParameterError``
    (nothing run) when ``run_id`` is used already; a failing cell does not raise (the result says so)."""
    scrubber = Scrubber(secret_values(settings))  # secrets fetched at run time included
    run = RunFolder(store, run_id, prepared.path.name, context.folder, options.attempt)
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    heartbeat = claim(run, prepared, scrubber, context, started)
    meter = UsageMeter.start()
    log.info("run started run_id=%s notebook=%s parameters=%s cwd=%s", run_id, run.notebook, prepared.parameters, root)
    browser = ChartBrowser() if context.browser is None else context.browser
    km = None
    try:
        pngs = ChartPngs(settings.chart_png, browser, PngCache(store, prepared.path.stem))
        _warm_up_pages()
        km = context.kernel.take() if context.kernel is not None else None
        observer = CellObserver(pngs, context)
        execution = run_cells(prepared, root=root, options=options, observer=observer, km=km, started=started)
        if execution.aborted:
            why = scrubber.text(f"{type(execution.failure).__name__}: {execution.failure}")
            log.warning("run aborted run_id=%s notebook=%s error=%s", run_id, run.notebook, why)
        heartbeat.stop()  # before the final record replaces the running one
        result = publish(
            execution, run, prepared.parameters, scrubber=scrubber, context=context, pngs=pngs, root=root, usage=meter
        )
        if result.html_key is None:
            store.delete(run.html_key)  # the placeholder page: the record says the page could not be rendered
    finally:
        heartbeat.stop()
        meter.stop()  # stopped already when the run was recorded
        if km is not None and km.has_kernel:  # a kernel started ahead that papermill never reached
            shutdown_now(km)
        if context.browser is None:
            browser.close()
    if isinstance(execution.failure, KeyboardInterrupt):
        raise execution.failure
    log.info(
        "run finished run_id=%s notebook=%s status=%s duration_s=%.1f wall_s=%.1f",
        run_id,
        run.notebook,
        result.status,
        result.duration_s,
        time.monotonic() - t0,
    )
    return result


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
        context = StageContext.of_run(group, kernel=warm)
        return execute(
            prepared, settings=settings, store=store, run_id=run_id, root=root, options=options, context=context
        )
    finally:
        if warm is not None:
            warm.discard()  # a refused run's kernel (nothing once the run took it)
