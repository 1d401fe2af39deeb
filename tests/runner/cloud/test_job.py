"""``python -m runner job``, the container entrypoint, run as a separate process: exit code = outcome, one SNS
message for a failed job (read back through an SQS subscription on moto's server), the daily report and its
CloudWatch metrics from a real daily pipeline in the offline world."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from condvest.offline.sandbox import offline_world
from condvest.runs import read_records
from condvest.storage import open_store
from runner.cloud.alerts import build_report, failure_text, fit, logs_url, metric_data, report_text
from tests.fixtures.paths import ROOT
from tests.runner.test_runner import SENTINEL, _project

pytestmark = pytest.mark.slow


def job(args: list[str], cwd, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CONDVEST_CHART_PNG": "0", **env}  # no browser: no test here looks at a PNG
    full.pop("CONDVEST_RUNS_URI", None) if "CONDVEST_RUNS_URI" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "runner", "job", *args, "--no-progress"],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_failing_notebook_exits_nonzero_and_publishes_one_alert_without_secrets(tmp_path, aws, sns_inbox):
    root = _project(tmp_path, "leak_secret")
    env = {**aws.env, "CONDVEST_ALERT_TOPIC_ARN": sns_inbox.topic_arn, "POLYGON_API_KEY": SENTINEL}
    r = job(["leak_secret", "--run-id", "j1"], root, env)
    assert r.returncode == 1, r.stderr
    folder = f"{root / 'runs'}/j1/"
    assert "job leak_secret failed at leak_secret.ipynb in cell 5 (`raise RuntimeError" in r.stderr
    assert folder in r.stderr
    [note] = sns_inbox.messages(expect=1)
    assert note["Subject"] == "condvest leak_secret failed, cell 5"
    assert note["MessageAttributes"]["kind"]["Value"] == "failure"
    text = note["Message"]
    assert "cell 5" in text and "RuntimeError: request for AAPL failed" in text and f"run folder: {folder}" in text
    assert f"page: {folder}leak_secret.html" in text
    detail = json.loads(text.split("detail: ", 1)[1])
    assert detail == {
        "attempt": 1,
        "batch_job_id": None,
        "cell": 5,
        "lineno": None,  # the raising line is the cell's first
        "notebook": "leak_secret.ipynb",
        "run_folder": folder,
        "run_id": "j1",
        "shard": None,
        "stage": None,
        "status": "failed",
        "target": "leak_secret",
    }
    for out in (r.stdout, r.stderr, json.dumps(note)):
        assert SENTINEL not in out
    # the alarm's metric: one failed run
    metrics = aws.client("cloudwatch").list_metrics(Namespace="Condvest", MetricName="FailedRuns")["Metrics"]
    assert {tuple((d["Name"], d["Value"]) for d in m["Dimensions"]) for m in metrics} == {
        (),
        (("Target", "leak_secret"),),
    }


# An alert is published by the job's process before it exits, and moto's SNS puts it on the SQS queue within the
# publish call: once the process has ended, one look at the inbox (``wait=0``) sees any message it published.


def test_without_a_topic_nothing_is_published(tmp_path, aws, sns_inbox):
    root = _project(tmp_path, "fail_third", "ok")
    r = job(["fail_third"], root, aws.env)
    assert r.returncode == 1 and "failed at fail_third.ipynb in cell 3" in r.stderr
    r = job(["ok"], root, aws.env)
    assert r.returncode == 0 and r.stdout.strip().endswith("/") and "job ok ok: " in r.stdout
    assert sns_inbox.messages(wait=0) == []
    assert aws.client("cloudwatch").list_metrics(Namespace="Condvest")["Metrics"] == []


def test_a_refused_job_exits_2_and_still_alerts(tmp_path, aws, sns_inbox):
    root = _project(tmp_path, "ok")
    env = {**aws.env, "CONDVEST_ALERT_TOPIC_ARN": sns_inbox.topic_arn}
    r = job(["ok", "-p", "nope", "1"], root, env)
    assert r.returncode == 2 and "job ok refused: parameter nope" in r.stderr
    [note] = sns_inbox.messages(expect=1)
    assert note["Subject"] == "condvest ok failed" and "before any notebook ran" in note["Message"]
    assert "run folder: none written" in note["Message"]
    assert not (root / "runs").exists()


def test_an_unreachable_topic_does_not_change_the_outcome(tmp_path, aws):
    root = _project(tmp_path, "ok")
    env = {**aws.env, "CONDVEST_ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:does-not-exist"}
    r = job(["ok"], root, env)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_cluster):
    root = tmp_path_factory.mktemp("job-world")
    os.chmod(root, 0o755)
    with offline_world(root, n_symbols=6, dms=False, pg_dsn=pg_cluster.dsn("postgres").reveal()) as env:
        yield root, env


def test_the_daily_pipeline_job_publishes_one_report_and_its_metrics(world, aws, sns_inbox):
    root, env = world
    env = {**env, **aws.env, "CONDVEST_ALERT_TOPIC_ARN": sns_inbox.topic_arn}
    r = job(["daily", "-p", "max_backfill_days", "3", "--run-id", "daily-1"], ROOT, env)
    assert r.returncode == 0, r.stdout + r.stderr
    records = [x for x in read_records(open_store(env["CONDVEST_RUNS_URI"])) if x["pipeline_run_id"] == "daily-1"]
    fetch, resample = (x["results"] for x in sorted(records, key=lambda x: x["stage"]))
    [note] = sns_inbox.messages(expect=1)
    assert note["MessageAttributes"]["kind"]["Value"] == "report"
    assert note["Subject"] == f"condvest daily report {fetch['as_of']}: ok"
    figures = json.loads(note["Message"].split("figures: ", 1)[1])
    assert figures["status"] == "ok" and figures["pipeline_run_id"] == "daily-1"
    assert figures["figures"]["SessionsFetched"] == fetch["sessions"] == 3
    assert figures["figures"]["BronzeRows"] == fetch["bronze_rows"] == 6 * 3
    assert figures["figures"]["PostgresRows"] == fetch["postgres_rows"]
    assert figures["figures"]["QuarantinedRows"] == fetch["quarantined"]
    assert figures["figures"]["BarsResampled"] == resample["bars_written"] > 0
    assert figures["bars_by_interval"] == resample["bars_by_interval"]
    assert set(figures["bars_by_interval"]) == {"3d", "5d", "8d", "13d", "21d", "34d"}
    assert set(figures["durations_s"]) == {"01_fetch", "02_resample"}
    assert f"run folder: {env['CONDVEST_RUNS_URI']}/daily-1/" in note["Message"]
    assert env["POLYGON_API_KEY"] not in json.dumps(note)
    cw = aws.client("cloudwatch")
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="Condvest")["Metrics"]}
    assert names >= {"FailedRuns", "SessionsFetched", "BronzeRows", "PostgresRows", "QuarantinedRows"}
    assert names >= {"BarsResampled", "StageDuration", "PipelineDuration"}
    per_interval = cw.list_metrics(Namespace="Condvest", MetricName="BarsResampled")["Metrics"]
    intervals = {d["Value"] for m in per_interval for d in m["Dimensions"] if d["Name"] == "Interval"}
    assert intervals == {"3d", "5d", "8d", "13d", "21d", "34d"}


# --- the texts, without servers -------------------------------------------------------------------------


def test_report_and_failure_texts():
    records = [
        {"pipeline_run_id": "p", "stage": 1, "notebook": "01_fetch.ipynb", "status": "ok", "duration_s": 2.0,
         "results": {"as_of": "2025-10-17", "sessions": 1, "bronze_rows": 10, "postgres_rows": 10, "quarantined": 1}},
        {"pipeline_run_id": "p", "stage": 2, "notebook": "02_resample.ipynb", "status": "ok", "duration_s": 3.5,
         "results": {"bars_written": 7, "bars_by_interval": {"3d": 4, "5d": 3}}},
        {"pipeline_run_id": "other", "stage": 1, "notebook": "01_fetch.ipynb", "status": "failed", "results": {}},
    ]  # fmt: skip
    report = build_report("daily", "p", records)
    assert report.status == "ok" and report.total_duration == 5.5 and report.as_of == "2025-10-17"
    assert report.figures == {
        "SessionsFetched": 1,
        "BronzeRows": 10,
        "PostgresRows": 10,
        "QuarantinedRows": 1,
        "BarsResampled": 7,
    }
    subject, text = report_text(report, "s3://b/runs/p/")
    assert subject == "condvest daily report 2025-10-17: ok"
    assert "bars resampled per interval  3d 4, 5d 3" in text and "total 5.5 s" in text
    data = metric_data(report, "daily", failed=False)
    assert {"MetricName": "FailedRuns", "Value": 0.0, "Unit": "Count"} in data
    assert sum(d["MetricName"] == "BarsResampled" for d in data) == 3  # the total and one per interval
    subject, text = failure_text("daily", "s3://b/runs/p/", stage=2, notebook="02_resample.ipynb", cell=4, source="x")
    assert subject == "condvest daily failed: stage 2, cell 4"
    assert text.startswith("condvest daily failed at stage 2 (02_resample.ipynb) cell 4 (`x`)")


def _notebook(root, name: str, *cells: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cells[0], metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells[1:]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")


def _start_job(args: list[str], root, env: dict[str, str], marker) -> subprocess.Popen[str]:
    """``python -m runner job ARGS`` as a process, returned once the notebook's cell touched ``marker``."""
    import time

    full = {**os.environ, "CONDVEST_CHART_PNG": "0", **env}  # no browser: no test here looks at a PNG
    full.pop("CONDVEST_RUNS_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "job", *args],
        cwd=root,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()[1] if proc.poll() is not None else "the cell never started"
    return proc


def test_sigterm_records_the_run_as_failed_and_exits_130(tmp_path, aws, sns_inbox):
    """Outside Batch (a local job, SageMaker) a stop is final: the run is recorded, its folder named, and alerted."""
    import signal

    root = _project(tmp_path)
    marker = tmp_path / "started"
    _notebook(
        root,
        "slow",
        "seconds = 120",
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(seconds)",
    )
    env = {**aws.env, "CONDVEST_ALERT_TOPIC_ARN": sns_inbox.topic_arn}
    proc = _start_job(["slow", "--run-id", "t1", "--no-progress"], root, env, marker)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    folder = f"{root / 'runs'}/t1/"
    assert f"job slow terminated (SIGTERM): the run was recorded as failed [{folder}]" in err
    [rec] = read_records(open_store(str(root / "runs")))
    assert rec["run_id"] == "t1" and rec["status"] == "failed" and rec["attempt"] == 1
    assert rec["error"]["ename"] == "KeyboardInterrupt" and rec["error"]["cell"] == 2  # interrupted in its cell
    [note] = sns_inbox.messages(expect=1)
    assert note["Subject"] == "condvest slow failed, cell 2"
    assert f"run folder: {folder}" in note["Message"] and "run id: t1" in note["Message"]


def test_a_stopped_batch_job_releases_the_lock_and_its_retry_runs_as_attempt_2(tmp_path, aws, sns_inbox):
    """A Spot reclaim: SIGTERM while the notebook holds the lake lock. The kernel is interrupted, the notebook's
    own clean-up releases the lock at once (not after its lease), the run is recorded as failed with exit 130 and
    no alert (Batch retries it); the same command as attempt 2 runs, is not busy, and is recorded as attempt 2."""
    import signal

    from condvest.lake_lock import read_lock

    root = _project(tmp_path)
    lake = tmp_path / "lake"
    marker = tmp_path / "holding"
    _notebook(
        root,
        "locked",
        "seconds = 120",
        "import pathlib, time\nfrom condvest.lake_lock import lake_lock\nfrom condvest.storage import open_store",
        f"with lake_lock(open_store(), 'resample', lease_s=300):\n"
        f"    first = not pathlib.Path({str(marker)!r}).exists()\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        f"    time.sleep(seconds if first else 0)",
    )
    env = {**aws.env, "CONDVEST_ALERT_TOPIC_ARN": sns_inbox.topic_arn, "CONDVEST_LAKE_URI": str(lake)}
    batch = {"AWS_BATCH_JOB_ID": "0b1d8e7c-reclaimed", "AWS_BATCH_JOB_ATTEMPT": "1"}
    command = ["locked", "--run-id", "r1", "--no-progress"]  # what submit puts in the job, for every attempt
    proc = _start_job(command, root, {**env, **batch}, marker)
    assert read_lock(open_store(str(lake)), "resample") is not None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert read_lock(open_store(str(lake)), "resample") is None  # released by the notebook, not left to expire
    assert sns_inbox.messages(wait=0) == []  # Batch retries a reclaim: no alert for attempt 1

    r = job(command, root, {**env, **batch, "AWS_BATCH_JOB_ATTEMPT": "2"})
    assert r.returncode == 0, r.stderr
    records = read_records(open_store(str(root / "runs")))
    assert [(x["run_id"], x["attempt"], x["status"]) for x in records] == [("r1", 1, "failed"), ("r1", 2, "ok")]
    assert records[1]["html"] == "r1/locked.attempt-2.html" and (root / "runs/r1/locked.html").exists()
    assert "a retry of run" not in (root / "runs/r1/locked.html").read_text()
    assert "a retry of run" in (root / "runs/r1/locked.attempt-2.html").read_text()
    assert sns_inbox.messages(wait=0) == []
    # attempt 2 again (a duplicated retry) is refused: an attempt's files are never overwritten
    r = job(command, root, {**env, **batch, "AWS_BATCH_JOB_ATTEMPT": "2"})
    assert r.returncode == 2 and "'r1' attempt 2 is already used" in r.stderr


def test_alert_links_and_the_sns_size_limit():
    url = logs_url("eu-west-1", "/condvest/jobs", "condvest-daily/default/4f2a")
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/"
        "$252Fcondvest$252Fjobs/log-events/condvest-daily$252Fdefault$252F4f2a"
    )
    short = "condvest daily failed at stage 1"
    assert fit(short) == short
    long = short + "\n" + "é" * 300_000  # 600,000 bytes: SNS would refuse it and the alert would be lost
    cut = fit(long)
    assert len(cut.encode()) <= 256 * 1024 - 2048 and cut.startswith(short) and "(cut: " in cut
