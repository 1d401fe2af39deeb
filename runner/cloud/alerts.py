"""What the runner tells operators: one SNS message per failed job, a report per daily (and weekly) pipeline,
and the same figures as CloudWatch metrics.

The topic is ``CONDVEST_ALERT_TOPIC_ARN``; unset, nothing is published and no metric is put. Every text goes
through the runner's ``Scrubber`` before it leaves, so no secret value the settings hold (nor an ``apiKey=``
or a DSN password) reaches a message. The report's figures are the result figures the notebooks recorded in
the run index (``results`` of each stage's record), so a report can be rebuilt from the index at any time.

Metrics (namespace ``CONDVEST_METRICS_NAMESPACE``, default ``Condvest``): ``FailedRuns`` (1 or 0 per job,
dimension ``Target``) for the alarm, and per reported pipeline (dimension ``Pipeline``) the figures of
``REPORTS`` (``BarsResampled`` also per ``Interval``), ``StageDuration`` per ``Stage`` and ``PipelineDuration``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        }


def build_report(pipeline: str, pipeline_run_id: str, records: Sequence[Mapping[str, Any]]) -> Report:
    """The report of one pipeline run from its run index records (the other runs' records are ignored)."""
    wanted = REPORTS.get(pipeline, {})
    mine = [r for r in records if r.get("pipeline_run_id") == pipeline_run_id]
    figures: dict[str, float] = {}
    labels: dict[str, str] = {}
    bars: dict[str, int] = {}
    durations: dict[str, float] = {}
    as_of = None
    for rec in sorted(mine, key=lambda r: r.get("stage") or 0):
        results = rec.get("results") or {}
        notebook = str(rec.get("notebook"))
        if isinstance(rec.get("duration_s"), int | float):
            durations[notebook.removesuffix(".ipynb")] = float(rec["duration_s"])
        as_of = as_of or results.get("as_of")
        for key, metric, label in wanted.get(notebook, ()):
            value = results.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                figures[metric] = value
                labels[metric] = label
        if isinstance(results.get(BARS_BY_INTERVAL), dict):
            bars.update({str(k): int(v) for k, v in results[BARS_BY_INTERVAL].items() if isinstance(v, int | float)})
    status = "ok" if mine and all(r.get("status") == "ok" for r in mine) else "failed"
    return Report(pipeline, pipeline_run_id, status, as_of, figures, labels, bars, durations)


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
    error: str = "",
    page: str | None = None,
    run_id: str | None = None,
    busy: bool = False,
    place: str | None = None,
) -> tuple[str, str]:
    """(subject, message) of a failed job: the stage, the failing cell, the error and where the run is."""
    where = []
    if stage is not None:
        where.append(f"stage {stage}")
    if notebook:
        where.append(f"({notebook})" if stage is not None else notebook)
    if cell is not None:
        where.append(f"cell {cell}" + (f" (`{source}`)" if source else ""))
    place = " ".join(where) or place or "before any notebook ran"
    state = "busy" if busy else "failed"
    subject = f"condvest {target} {state}" + (f": stage {stage}" if stage is not None else "")
    subject += f", cell {cell}" if cell is not None else ""
    lines = [f"condvest {target} {state} at {place}", ""]
    if error:
        lines.append(error)
    lines.append("")
    lines.append(f"run folder: {run_folder or 'none written'}")
    if page:
        lines.append(f"page: {page}")
    if run_id:
        lines.append(f"run id: {run_id}")
    detail = {"target": target, "status": state, "stage": stage, "notebook": notebook, "cell": cell}
    detail |= {"run_folder": run_folder, "run_id": run_id}
    lines += ["", "detail: " + json.dumps(detail, sort_keys=True)]
    return subject, "\n".join(lines)


def _subject(text: str) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean if len(clean) <= SUBJECT_MAX else clean[: SUBJECT_MAX - 3] + "..."


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
        Message=scrub.text(message),
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
