"""``python -m runner job NOTEBOOK|PIPELINE [-p NAME VALUE]...``: the container image's entrypoint.

Runs a notebook or a named pipeline exactly as ``run``/``pipeline`` do (same run folders, same run index),
then tells: a failed job publishes one SNS message (stage, failing cell, run folder), a reported pipeline
(``daily``, ``weekly``) that succeeded publishes its report, and the figures go to CloudWatch; with no
``CONDVEST_ALERT_TOPIC_ARN`` nothing is published. Telling never changes the outcome.

The exit code is the outcome, whatever ran: 0 ok; 1 a notebook failed (stderr names the stage and the cell);
2 refused before anything ran (unknown notebook or pipeline, bad parameter, bad setting); 3 the runs
location could not be written; 75 busy (another run holds the lake lock: a duplicated or retried schedule
stops instead of running twice); 130 interrupted or terminated (SIGTERM from Batch or SageMaker: the run is
recorded as failed before the process exits). ``RUNNER_EXIT_CODES`` lists them; ``ALERTED_EXIT_CODES`` are those
whose alert the runner published itself, which the infrastructure's failure rule leaves out.

A stop lets go: the first SIGTERM interrupts the kernel running the notebook (``runner.kernel.interrupt_executing``)
so the cell fails with ``KeyboardInterrupt`` and the notebook's own clean-up runs (the lake lock is released at
once, not after its lease), the run is recorded as failed at that cell and the job exits 130; a kernel that has not
let go after ``STOP_GRACE_S`` (or a second SIGTERM) is left, the run recorded by the runner as before.

A retry runs: Batch numbers a job's tries (``AWS_BATCH_JOB_ATTEMPT``), and attempt N of a submitted job runs as
attempt N of the same run id (its files beside the first attempt's, its index record saying ``attempt``). A stop
inside Batch publishes no alert: Batch decides whether a retry follows, and its final FAILED event is what the
template's rule reports; every other failure publishes one alert naming the Batch job id, attempt, shard and the
console links of the logs, the job and the page.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from condvest.errors import CondvestError, ConfigError, ParameterError, StorageError
from condvest.runs import read_records
from condvest.settings import Settings
from condvest.storage import open_store
from runner.cloud import alerts
from runner.execute import RunOptions, RunResult, run_notebook
from runner.kernel import interrupt_executing
from runner.pipelines import PIPELINES, run_pipeline
from runner.scrub import Scrubber

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_STORAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 75, 130
#: the exit codes by which the runner reports an outcome itself (any other code: the job died)
RUNNER_EXIT_CODES = (EXIT_FAILED, EXIT_REFUSED, EXIT_STORAGE, EXIT_BUSY, EXIT_INTERRUPTED)
#: the exit codes whose alert the runner published itself: the template's failure rule reports every other final
#: failure of a Batch job (130 included: inside Batch a stop is Batch's to retry or report)
ALERTED_EXIT_CODES = (EXIT_FAILED, EXIT_REFUSED, EXIT_STORAGE, EXIT_BUSY)
BUSY_ERROR = "BusyError"
#: what AWS Batch sets in a job's container: the job's id and which try this is (1, 2, ...)
JOB_ID_ENV, ATTEMPT_ENV = "AWS_BATCH_JOB_ID", "AWS_BATCH_JOB_ATTEMPT"
#: seconds an interrupted notebook gets to clean up after SIGTERM (Batch sends SIGKILL 30 s after SIGTERM)
STOP_GRACE_S = 20


@dataclass(frozen=True)
class BatchJob:
    """The Batch job this process runs as: ``job_id`` (``None`` outside Batch) and ``attempt`` (1 the first try)."""

    job_id: str | None = None
    attempt: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BatchJob:
        env = os.environ if env is None else env
        attempt = env.get(ATTEMPT_ENV, "")
        return cls(env.get(JOB_ID_ENV) or None, int(attempt) if attempt.isdigit() and int(attempt) > 0 else 1)


@dataclass(frozen=True)
class JobOutcome:
    """What one job came to: its exit code, the stage runs, where they are, and the line that says so."""

    target: str
    exit_code: int
    line: str
    results: list[RunResult] = field(default_factory=list)
    run_folder: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def pipeline_run_id(self) -> str | None:
        return self.results[-1].pipeline_run_id if self.results else None


def _folder(results: list[RunResult]) -> str | None:
    if not results:
        return None
    last = results[-1]
    return f"{last.runs_uri.rstrip('/')}/{last.pipeline_run_id or last.run_id}/"


def _failed_line(target: str, last: RunResult, folder: str | None) -> str:
    where = f"stage {last.stage} ({last.notebook})" if last.stage is not None else last.notebook
    e = last.error
    if e is None:
        return f"job {target} failed at {where}: see the executed notebook [{folder}]"
    cell = f"cell {e.cell}" if e.cell is not None else "a cell"
    fields = alerts.error_fields(e.as_dict())
    cell += f", line {fields['lineno']}" if fields["lineno"] else ""
    message = e.evalue.strip().splitlines()[0] if e.evalue.strip() else ""
    return f"job {target} failed at {where} in {cell} (`{fields['source']}`): {e.ename}: {message} [{folder}]"


class _Terminated(KeyboardInterrupt):
    """SIGTERM (Batch timeout or termination, SageMaker stop), raised where the run is so it gets recorded."""


class _Stop:
    """The SIGTERM handler: the first signal interrupts the kernels running cells (the run then fails at its cell,
    cleaned up and recorded); with no kernel running cells, on a second signal or once ``grace_s`` passed,
    ``_Terminated`` is raised where the runner is (``execute`` records the run as failed)."""

    def __init__(self, grace_s: float = STOP_GRACE_S) -> None:
        self.grace_s, self.signalled = grace_s, False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        first, self.signalled = not self.signalled, True
        if first and interrupt_executing():
            log.warning("stopping: kernel interrupted signal=%d grace_s=%g", signum, self.grace_s)
            signal.signal(signal.SIGALRM, self._late)
            signal.alarm(max(1, int(self.grace_s)))
            return
        raise _Terminated(f"signal {signum}")

    def _late(self, signum: int, frame: FrameType | None) -> None:
        raise _Terminated(f"the interrupted notebook did not stop within {self.grace_s:g} s")


def run_job(
    target: str,
    parameters: Mapping[str, Any],
    *,
    settings: Settings,
    options: RunOptions = RunOptions(),
    stop: _Stop | None = None,
) -> JobOutcome:
    """Run ``target`` (a pipeline name, else a notebook) and return its outcome; never raises a workbench error.
    ``stop``: the SIGTERM handler in place (a run that ended after it interrupted the kernel was stopped)."""
    results: list[RunResult] = []
    scrub = Scrubber(settings.secrets())
    try:
        if target in PIPELINES:
            results = run_pipeline(target, parameters, settings=settings, options=options)
        else:
            results = [run_notebook(target, parameters, settings=settings, options=options)]
    except KeyboardInterrupt as exc:  # the run was recorded as failed by execute()
        what = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        folder = f"{(options.runs_uri or settings.runs_uri).rstrip('/')}/{options.run_id}/" if options.run_id else None
        line = f"job {target} {what}: the run was recorded as failed" + (f" [{folder}]" if folder else "")
        return JobOutcome(target, EXIT_INTERRUPTED, line, results, folder, line)
    except (ParameterError, ConfigError) as exc:
        text = scrub.text(str(exc))
        return JobOutcome(target, EXIT_REFUSED, f"job {target} refused: {text}", error=text)
    except StorageError as exc:
        text = scrub.text(str(exc))
        return JobOutcome(target, EXIT_STORAGE, f"job {target} failed: runs location: {text}", error=text)
    except CondvestError as exc:
        text = scrub.text(str(exc))
        return JobOutcome(target, EXIT_FAILED, f"job {target} failed: {text}", error=text)
    finally:
        signal.alarm(0)
    stopped = stop is not None and stop.signalled and bool(results) and not results[-1].ok
    folder = _folder(results)
    last = results[-1]
    if stopped:
        line = f"job {target} terminated (SIGTERM): the run was recorded as failed [{folder}]"
        return JobOutcome(target, EXIT_INTERRUPTED, line, results, folder, line)
    if last.ok:
        return JobOutcome(target, EXIT_OK, f"job {target} ok: {folder}", results, folder)
    if last.error is not None and last.error.ename == BUSY_ERROR:
        line = f"job {target} busy: {last.error.evalue.strip().splitlines()[0]} [{folder}]"
        return JobOutcome(target, EXIT_BUSY, line, results, folder, last.error.evalue)
    return JobOutcome(target, EXIT_FAILED, _failed_line(target, last, folder), results, folder)


def _alert(outcome: JobOutcome, settings: Settings, job: BatchJob) -> None:
    """The failure message of a job (none for a stop inside Batch: its FAILED event, when final, is the rule's)."""
    if outcome.exit_code == EXIT_INTERRUPTED and job.job_id:
        log.warning("no alert: stopped inside Batch, which retries or reports it job_id=%s", job.job_id)
        return
    last = outcome.results[-1] if outcome.results else None
    e = last.error if last is not None else None
    page = f"{last.runs_uri.rstrip('/')}/{last.html_key}" if last is not None and last.html_key else None
    shard = (last.parameters or {}).get("shard") if last is not None else None
    place = alerts.job_place(settings, job.job_id, job.attempt, str(shard) if shard else None, page)
    cell = alerts.error_fields(e.as_dict() if e is not None else None) or {"error": outcome.error or outcome.line}
    subject, message = alerts.failure_text(
        outcome.target,
        outcome.run_folder,
        stage=last.stage if last is not None else None,
        notebook=last.notebook if last is not None else None,
        **cell,
        page=page,
        run_id=(last.pipeline_run_id or last.run_id) if last is not None else None,
        busy=outcome.exit_code == EXIT_BUSY,
        place="a notebook, stopped by a signal" if outcome.exit_code == EXIT_INTERRUPTED else None,
        job=place,
    )
    alerts.safely("alert", alerts.publish, settings, subject, message, kind="failure")


def tell(outcome: JobOutcome, settings: Settings, job: BatchJob = BatchJob()) -> None:
    """Publish the failure message or the pipeline's report, and put the metrics (when a topic is set)."""
    if not settings.cloud.alert_topic_arn:
        return
    report = None
    if not outcome.ok:
        _alert(outcome, settings, job)
    elif outcome.target in alerts.REPORTS and outcome.pipeline_run_id:
        runs = outcome.results[-1].runs_uri
        try:
            records = read_records(open_store(runs, settings))
        except StorageError as exc:
            log.error("report not built: run index unreadable: %s", exc)
        else:
            report = alerts.build_report(outcome.target, outcome.pipeline_run_id, records)
            subject, message = alerts.report_text(report, outcome.run_folder or runs)
            alerts.safely("report", alerts.publish, settings, subject, message, kind="report")
    final = not (outcome.exit_code == EXIT_INTERRUPTED and job.job_id)  # a stop in Batch may be retried
    data = alerts.metric_data(report, outcome.target, failed=not outcome.ok) if final else []
    alerts.safely("metrics", alerts.put_metrics, settings, data)


def main_job(
    target: str, parameters: Mapping[str, Any], *, settings: Settings, options: RunOptions = RunOptions()
) -> int:
    """The ``job`` command: run (attempt ``AWS_BATCH_JOB_ATTEMPT`` of the run), print the stage lines and the
    outcome, tell, return the exit code."""
    job = BatchJob.from_env()
    options = replace(options, attempt=job.attempt)
    if job.job_id:  # the first line of the job's log stream (``runner logs`` finds the stream by it)
        print(f"job {target}: batch job {job.job_id} attempt {job.attempt}", file=sys.stderr, flush=True)
    stop = _Stop()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        outcome = run_job(target, parameters, settings=settings, options=options, stop=stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for r in outcome.results:
        print(r.summary(), file=sys.stdout if r.ok else sys.stderr)
    print(outcome.line, file=sys.stdout if outcome.ok else sys.stderr)
    tell(outcome, settings, job)
    return outcome.exit_code
