"""What the runner tells operators: one SNS message per failed job, a report per daily (and weekly) pipeline,
and the same figures as CloudWatch metrics.

The topic is ``CONDVEST_ALERT_TOPIC_ARN``; unset, nothing is published and no metric is put. Every text goes
through the runner's ``Scrubber`` before it leaves, so no secret value the settings hold (nor an ``apiKey=``
or a DSN password) reaches a message. The report's figures are the result figures the notebooks recorded in
the run index (``results`` of each stage's record), so a report can be rebuilt from the index at any time.

Metrics (namespace ``CONDVEST_METRICS_NAMESPACE``, default ``Condvest``): ``FailedRuns`` (1 or 0 per job,
dimension ``Target``) for the alarm, and per reported pipeline (dimension ``Pipeline``) the figures of
``REPORTS`` (``BarsResampled`` also per ``Interval``), ``StageDuration`` per ``Stage`` and ``PipelineDuration``, and
``PipelineSucceeded`` (1 per success: the heartbeat whose absence for 26 hours alarms). A stop inside Batch puts no
``FailedRuns``: Batch retries it or reports its final failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from condvest.settings import Settings
from runner.cloud.aws import client, error_text
from runner.scrub import Scrubber

log = logging.getLogger(__name__)

#: figures a pipeline's report takes from each stage's recorded results: (result key, metric name, label)
REPORTS: dict[str, dict[str, tuple[tuple[str, str, str], ...]]] = {
    "daily": {
        "01_fetch.ipynb": (
            ("sessions", "SessionsFetched", "sessions fetched"),
            ("sessions_failed", "SessionsFailed", "sessions failed"),
            ("requests", "Requests", "API requests"),
            ("bronze_rows", "BronzeRows", "rows stored in bronze"),
            ("postgres_rows", "PostgresRows", "rows stored in Postgres"),
            ("quarantined", "QuarantinedRows", "rows quarantined"),
            ("duplicates", "DuplicateRows", "duplicate rows dropped"),
        ),
        "02_resample.ipynb": (("bars_written", "BarsResampled", "bars resampled"),),
    },
    "weekly": {
        "04_retention.ipynb": (
            ("archived", "RowsArchived", "rows archived"),
            ("deleted", "RowsDeleted", "rows deleted from raw_ohlcv"),
        ),
    },
}
#: the per-interval bar counts 02_resample records (``{"3d": n, ...}``)
BARS_BY_INTERVAL = "bars_by_interval"
SUBJECT_MAX = 100  # SNS: at most 100 printable ASCII characters
#: put (1, dimension ``Pipeline``) each time a reported pipeline succeeded
HEARTBEAT = "PipelineSucceeded"
#: where Batch's awslogs driver writes when a job definition names no group
BATCH_LOG_GROUP = "/aws/batch/job"
MESSAGE_MAX = 256 * 1024 - 2048  # SNS: 256 KiB per message, its attributes included (with room to spare)


@dataclass(frozen=True)
class Report:
    """A pipeline run's figures, from its records in the run index."""

    pipeline: str
    pipeline_run_id: str
    status: str  # ok | failed
    as_of: str | None
    figures: dict[str, float]  # metric name -> value
    labels: dict[str, str]  # metric name -> what it counts
    bars_by_interval: dict[str, int] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)  # stage notebook -> seconds
    usage: dict[str, float] = field(default_factory=dict)  # vcpu_seconds, gb_seconds summed over the stages

    @property
    def total_duration(self) -> float:
        return round(sum(self.durations.values()), 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "pipeline_run_id": self.pipeline_run_id,
            "status": self.status,
            "as_of": self.as_of,
            "figures": self.figures,
            "bars_by_interval": self.bars_by_interval,
            "durations_s": self.durations,
            "total_duration_s": self.total_duration,
            **self.usage,
        }


def build_report(pipeline: str, pipeline_run_id: str, records: Sequence[Mapping[str, Any]]) -> Report:
    """The report of one pipeline run from its run index records (the other runs' records are ignored)."""
    wanted = REPORTS.get(pipeline, {})
    mine = [r for r in records if r.get("pipeline_run_id") == pipeline_run_id]
    figures: dict[str, float] = {}
    labels: dict[str, str] = {}
    bars: dict[str, int] = {}
    durations: dict[str, float] = {}
    usage: dict[str, float] = {}
    as_of = None
    for rec in sorted(mine, key=lambda r: r.get("stage") or 0):
        results = rec.get("results") or {}
        notebook = str(rec.get("notebook"))
        if isinstance(rec.get("duration_s"), int | float):
            durations[notebook.removesuffix(".ipynb")] = float(rec["duration_s"])
        for k in ("vcpu_seconds", "gb_seconds"):  # runner.usage: what the run used, to price it
            if isinstance(rec.get(k), int | float):
                usage[k] = round(usage.get(k, 0.0) + float(rec[k]), 3)
        as_of = as_of or results.get("as_of")
        for key, metric, label in wanted.get(notebook, ()):
            value = results.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                figures[metric] = value
                labels[metric] = label
        if isinstance(results.get(BARS_BY_INTERVAL), dict):
            bars.update({str(k): int(v) for k, v in results[BARS_BY_INTERVAL].items() if isinstance(v, int | float)})
    status = "ok" if mine and all(r.get("status") == "ok" for r in mine) else "failed"
    return Report(pipeline, pipeline_run_id, status, as_of, figures, labels, bars, durations, usage)


def report_text(report: Report, run_folder: str) -> tuple[str, str]:
    """(subject, message) of a report: one line per figure, then the figures as JSON."""
    when = f" {report.as_of}" if report.as_of else ""
    subject = f"condvest {report.pipeline} report{when}: {report.status}"
    lines = [f"condvest {report.pipeline} pipeline{when}: {report.status}", ""]
    for metric, value in report.figures.items():
        lines.append(f"{report.labels.get(metric, metric):<28} {value:>12,}")
    if report.bars_by_interval:
        per = ", ".join(f"{k} {v:,}" for k, v in report.bars_by_interval.items())
        lines.append(f"{'bars resampled per interval':<28} {per}")
    if report.durations:
        per = ", ".join(f"{k} {v:.1f} s" for k, v in report.durations.items())
        lines.append(f"{'durations':<28} {per}; total {report.total_duration:.1f} s")
    if report.usage:
        used = ", ".join(f"{v:,.1f} {k.replace('_seconds', '-s')}" for k, v in report.usage.items())
        lines.append(f"{'resources used':<28} {used}")
    lines += ["", f"run folder: {run_folder}", f"run id: {report.pipeline_run_id}", ""]
    lines.append("figures: " + json.dumps(report.as_dict(), sort_keys=True))
    return subject, "\n".join(lines)


def failure_text(
    target: str,
    run_folder: str | None,
    *,
    stage: int | None = None,
    notebook: str | None = None,
    cell: int | None = None,
    source: str = "",
    lineno: int | None = None,
    error: str = "",
    page: str | None = None,
    run_id: str | None = None,
    busy: bool = False,
    place: str | None = None,
    job: JobPlace | None = None,
) -> tuple[str, str]:
    """(subject, message) of a failed job: the stage, the failing cell and line (``source``: the line that raised,
    ``lineno`` its number in the cell; ``error_fields`` reads them from an error record), the error, where the run
    is and (``job``) which Batch job and attempt ran it, with links a person can open."""
    where = []
    if stage is not None:
        where.append(f"stage {stage}")
    if notebook:
        where.append(f"({notebook})" if stage is not None else notebook)
    if cell is not None:
        where.append(f"cell {cell}" + (f", line {lineno}" if lineno else "") + (f" (`{source}`)" if source else ""))
    place = " ".join(where) or place or "before any notebook ran"
    state = "busy" if busy else "failed"
    subject = f"condvest {target} {state}" + (f": stage {stage}" if stage is not None else "")
    subject += f", cell {cell}" if cell is not None else ""
    job = job or JobPlace()
    subject += f", shard {job.shard}" if job.shard else ""
    lines = [f"condvest {target} {state} at {place}", ""]
    if error:
        lines.append(error)
    lines.append("")
    lines.append(f"run folder: {run_folder or 'none written'}")
    if page:
        lines.append(f"page: {page}")
    if run_id:
        lines.append(f"run id: {run_id}")
    lines += job.lines()
    detail = {"target": target, "status": state, "stage": stage, "notebook": notebook, "cell": cell, "lineno": lineno}
    detail |= {"run_folder": run_folder, "run_id": run_id}
    detail |= {"batch_job_id": job.job_id, "attempt": job.attempt, "shard": job.shard}
    lines += ["", "detail: " + json.dumps(detail, sort_keys=True)]
    return subject, "\n".join(lines)


def error_fields(error: Mapping[str, Any] | None) -> dict[str, Any]:
    """``failure_text``'s cell, ``source`` (the line that raised: the record's ``line``, else the cell's first line
    ``source``), ``lineno`` and ``error`` from a failed cell's error record (``CellError.as_dict()``)."""
    if not error:
        return {}
    line = str(error.get("line") or error.get("source") or "").strip()
    lineno = error.get("lineno") if error.get("line") else None  # said only past the cell's first line
    return {
        "cell": error.get("cell"),
        "source": line,
        "lineno": lineno if isinstance(lineno, int) and lineno > 1 else None,
        "error": f"{error.get('ename')}: {error.get('evalue')}",
    }


@dataclass(frozen=True)
class JobPlace:
    """Where a failed run ran: its Batch job id, attempt and shard, and the console links that lead to the cause
    (the job, its CloudWatch Logs stream, the executed page)."""

    job_id: str | None = None
    attempt: int = 1
    shard: str | None = None
    job_url: str | None = None
    logs_url: str | None = None
    page_url: str | None = None

    def lines(self) -> list[str]:
        out = []
        if self.job_id:
            out.append(f"batch job: {self.job_id} (attempt {self.attempt})")
        if self.shard:
            out.append(f"shard: {self.shard}")
        for label, url in (("page link", self.page_url), ("logs", self.logs_url), ("job", self.job_url)):
            if url:
                out.append(f"{label}: {url}")
        return out


def _console_part(text: str) -> str:
    """CloudWatch's console encodes a log group or stream name in the URL fragment with ``$25`` for ``%``."""
    return quote(text, safe="").replace("%", "$25")


def logs_url(region: str, group: str, stream: str | None = None) -> str:
    """The CloudWatch Logs console URL of a log stream (of the group when ``stream`` is ``None``)."""
    url = f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
    url += _console_part(group)
    return url + (f"/log-events/{_console_part(stream)}" if stream else "")


def batch_job_url(region: str, job_id: str) -> str:
    """The Batch console URL of a job (its attempts, status reasons and log stream)."""
    return f"https://{region}.console.aws.amazon.com/batch/home?region={region}#jobs/detail/{job_id}"


def object_url(region: str, uri: str) -> str | None:
    """The S3 console URL of the object at ``s3://bucket/key`` (``None`` for any other location)."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?region={region}&prefix={quote(key, safe='/')}"


def job_place(settings: Settings, job_id: str | None, attempt: int, shard: str | None, page: str | None) -> JobPlace:
    """The ``JobPlace`` of a run: the log stream asked of Batch (``DescribeJobs`` on the running job; when that
    fails the job's console page still leads to it)."""
    region = settings.aws_region or "us-east-1"  # boto3's own default when none is set
    page_url = object_url(region, page) if page else None
    if not job_id:
        return JobPlace(None, attempt, shard, page_url=page_url)
    group, stream = BATCH_LOG_GROUP, None
    try:
        [found] = client("batch", settings).describe_jobs(jobs=[job_id])["jobs"]
        container = found.get("container") or {}
        group = (container.get("logConfiguration") or {}).get("options", {}).get("awslogs-group") or group
        stream = container.get("logStreamName") or None
    except Exception as exc:
        log.warning("log stream not found job_id=%s error=%s", job_id, error_text(exc))
    logs = logs_url(region, group, stream)  # without a stream: the group, where the job id finds it
    return JobPlace(job_id, attempt, shard, batch_job_url(region, job_id), logs, page_url)


def _subject(text: str) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean if len(clean) <= SUBJECT_MAX else clean[: SUBJECT_MAX - 3] + "..."


def fit(message: str, limit: int = MESSAGE_MAX) -> str:
    """``message`` cut to ``limit`` bytes of UTF-8 (SNS refuses a longer one and the alert would be lost): the
    head, which names the failure, is kept, and the cut is said."""
    data = message.encode()
    if len(data) <= limit:
        return message
    note = f"\n... (cut: {len(data) - limit:,} bytes more; the executed notebook has everything)"
    head = data[: limit - len(note.encode())].decode(errors="ignore")
    return head + note


def publish(settings: Settings, subject: str, message: str, *, kind: str) -> str | None:
    """Publish one scrubbed message to the alert topic; returns the message id (``None``: no topic set)."""
    topic = settings.cloud.alert_topic_arn
    if not topic:
        log.info("alert not published reason=no-topic kind=%s", kind)
        return None
    scrub = Scrubber(settings.secrets())
    response = client("sns", settings).publish(
        TopicArn=topic,
        Subject=_subject(scrub.text(subject)),
        Message=fit(scrub.text(message)),
        MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
    )
    log.info("alert published kind=%s topic=%s message_id=%s", kind, topic, response.get("MessageId"))
    return response.get("MessageId")


def metric_data(report: Report | None, target: str, failed: bool) -> list[dict[str, Any]]:
    """The CloudWatch datums of one job: ``FailedRuns``, and the report's figures when there is one."""
    value = float(failed)
    data: list[dict[str, Any]] = [
        {"MetricName": "FailedRuns", "Value": value, "Unit": "Count"},  # what the alarm watches
        {
            "MetricName": "FailedRuns",
            "Dimensions": [{"Name": "Target", "Value": target}],
            "Value": value,
            "Unit": "Count",
        },
    ]
    if report is None:
        return data
    pipe = [{"Name": "Pipeline", "Value": report.pipeline}]
    if report.status == "ok":  # the heartbeat: the template alarms when the daily one is missing for 26 hours
        data.append({"MetricName": HEARTBEAT, "Dimensions": pipe, "Value": 1.0, "Unit": "Count"})
    for metric, value in report.figures.items():
        data.append({"MetricName": metric, "Dimensions": pipe, "Value": float(value), "Unit": "Count"})
    for interval, value in report.bars_by_interval.items():
        dims = [*pipe, {"Name": "Interval", "Value": interval}]
        data.append({"MetricName": "BarsResampled", "Dimensions": dims, "Value": float(value), "Unit": "Count"})
    for stage, seconds in report.durations.items():
        dims = [*pipe, {"Name": "Stage", "Value": stage}]
        data.append({"MetricName": "StageDuration", "Dimensions": dims, "Value": seconds, "Unit": "Seconds"})
    if report.durations:
        data.append(
            {"MetricName": "PipelineDuration", "Dimensions": pipe, "Value": report.total_duration, "Unit": "Seconds"}
        )
    return data


def put_metrics(settings: Settings, data: list[dict[str, Any]]) -> None:
    """Put the datums in the metrics namespace (only when the alert topic is set: one switch for both)."""
    if not settings.cloud.alert_topic_arn or not data:
        return
    cw = client("cloudwatch", settings)
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace=settings.cloud.metrics_namespace, MetricData=data[i : i + 500])
    log.info("metrics put namespace=%s count=%d", settings.cloud.metrics_namespace, len(data))


def safely(what: str, fn: Any, *args: Any, **kwargs: Any) -> bool:
    """Call ``fn``; an AWS failure is logged (scrubbed by the log filter) and reported as False, never raised:
    telling must not change a job's outcome."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        log.error("%s failed: %s", what, error_text(exc))
        return False
    return True
