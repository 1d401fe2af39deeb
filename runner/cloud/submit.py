"""``submit`` and ``schedule``: a run handed to AWS Batch or SageMaker (``runner.cloud.operate`` follows it).

``submit`` checks the request as a local run would, builds the API payloads and, unless ``--dry-run``
(which prints them as JSON and calls nothing), registers the group's job definition when it changed,
submits, and keeps a submission record ``_submissions/<run id>.json`` beside the run index the job will
write (``jobspec.job_runs_uri``). ``status`` reads that record, polls the backend until the job ends, then
reads the run index: the exit code is the run's outcome (0 only when the job succeeded and every run it
recorded is ok; 1 otherwise, naming the failing stage and cell, or the reason the job died).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Any

from condvest.checkpoints import checkpoint_table
from condvest.errors import ObjectNotFound, ParameterError
from condvest.runs import new_run_id
from condvest.settings import Settings
from condvest.storage import Store, open_store
from runner.cloud import batch, jobspec, sagemaker, schedules
from runner.cloud.aws import client
from runner.scrub import Scrubber

SUBMISSIONS = "_submissions"
BACKENDS = ("batch", "sagemaker")


def _store(settings: Settings) -> Store:
    return open_store(jobspec.job_runs_uri(settings), settings)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def auto_shards(settings: Settings) -> tuple[int, str]:
    """``--shards auto``: one shard per ``BATCH_SIZE`` symbols of the lake (as its latest checkpoint counts them),
    2 to 10,000; returns (shards, how it was chosen). ``ParameterError`` when no checkpoint says."""
    table = checkpoint_table(settings)
    symbols = int(table["symbols"].max()) if len(table) and table["symbols"].notna().any() else 0
    if symbols <= 0:
        raise ParameterError(
            "--shards auto counts the lake's symbols from its checkpoints and found none: give --shards N",
            parameter="shards",
        )
    size = max(1, settings.batch_size)
    shards = min(10_000, max(2, -(-symbols // size)))
    return shards, f"{symbols} symbols / BATCH_SIZE {size}"


def plan_submission(
    target: str,
    parameters: list[tuple[str, str]],
    backend: str,
    settings: Settings,
    run_id: str | None = None,
    shards: int | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """(run id, the API calls in order as ``{"api": "<service>.<operation>", "payload": {...}}``)."""
    if backend not in BACKENDS:
        raise ParameterError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})", parameter="backend")
    jobspec.check_request(target, parameters, settings)
    name = jobspec.target_name(target)
    run_id = run_id or new_run_id(name)
    if shards is not None:
        if backend != "batch":
            raise ParameterError("--shards runs as a Batch array job: use --backend batch", parameter="shards")
        if not 2 <= shards <= 10_000:
            raise ParameterError(f"a Batch array job has 2 to 10000 children, not {shards}", parameter="shards")
        groups = sorted({jobspec.group_of(nb) for nb, _ in jobspec.sharded_stages(name)})
        calls = [{"api": "batch.register_job_definition", "payload": batch.job_definition(g, settings)} for g in groups]
        calls += [
            {"api": "batch.submit_job", "payload": p}
            for p in batch.sharded_jobs(name, parameters, shards, run_id, settings)
        ]
        _check_payloads(calls, settings)
        return run_id, calls
    if backend == "batch":
        calls = [
            {"api": "batch.register_job_definition", "payload": batch.job_definition(jobspec.group_of(name), settings)},
            {"api": "batch.submit_job", "payload": batch.submit_job(name, parameters, run_id, settings)},
        ]
    else:
        payload = sagemaker.create_processing_job(name, parameters, run_id, settings)
        calls = [{"api": "sagemaker.create_processing_job", "payload": payload}]
    _check_payloads(calls, settings)
    return run_id, calls


def _check_payloads(calls: list[dict[str, Any]], settings: Settings) -> None:
    """No payload may carry a secret value the settings hold (the last guard before anything is sent)."""
    text = json.dumps(calls, default=str)
    if Scrubber(settings.secrets()).text(text) != text:
        raise ParameterError("a payload would carry a secret value; refusing to submit", parameter="payload")


#: a complete secret ARN ends with Secrets Manager's 6-character suffix; ECS refuses a partial one with a JSON key
_COMPLETE_ARN = re.compile(r":secret:.+-[A-Za-z0-9]{6}$")


def complete_secret_arns(settings: Settings) -> Settings:
    """The settings with each partial secret ARN (no suffix) completed by Secrets Manager (``DescribeSecret``)."""
    changes = {}
    for field in ("polygon_api_key_secret_arn", "rds_secret_arn"):
        arn = getattr(settings, field)
        if arn and not _COMPLETE_ARN.search(arn):
            changes[field] = client("secretsmanager", settings).describe_secret(SecretId=arn)["ARN"]
            print(f"secret {arn} is {changes[field]} (a job definition needs the complete ARN)", file=sys.stderr)
    return settings.with_(**changes) if changes else settings


def submit(
    target: str,
    parameters: list[tuple[str, str]],
    backend: str,
    settings: Settings,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
    shards: int | None = None,
) -> int:
    if not dry_run:
        settings = complete_secret_arns(settings)
    run_id, calls = plan_submission(target, parameters, backend, settings, run_id, shards)
    if note := jobspec.previous_definition_note(settings):
        print(note, file=sys.stderr)
    if dry_run:
        _print_json({"run_id": run_id, "backend": backend, "shards": shards, "calls": calls})
        return 0
    record: dict[str, Any] = {
        "run_id": run_id,
        "backend": backend,
        "target": jobspec.target_name(target),
        "submitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs_uri": jobspec.job_runs_uri(settings),
        "jobs": [],
    }
    if backend == "batch":
        api = client("batch", settings)
        ids: dict[str, str] = {}
        for call in calls:
            if call["api"] == "batch.register_job_definition":
                arn, registered = batch.ensure_job_definition(api, call["payload"])
                print(f"job definition {arn} ({'registered' if registered else 'unchanged'})", file=sys.stderr)
                continue
            response = api.submit_job(**batch.resolve_refs(call["payload"], ids))
            ids[response["jobName"]] = response["jobId"]
            record["jobs"].append(job_entry(response, call["payload"]))
        if shards is not None:
            record["shards"] = shards
    else:
        payload = calls[0]["payload"]
        client("sagemaker", settings).create_processing_job(**payload)
        record["jobs"].append({"id": payload["ProcessingJobName"], "name": payload["ProcessingJobName"]})
    write_submission(record, settings)
    jobs = ", ".join(j["id"] for j in record["jobs"])
    print(f"submitted {run_id} to {backend} ({jobs}); follow it: python -m runner status {run_id}")
    return 0


def job_entry(response: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A submitted Batch job as the submission record keeps it: id, name, and (sharded runs) its stage and part
    (``shards``: the array job, ``commit``, ``shard-<i>``: one shard re-run)."""
    tags = payload.get("tags") or {}
    entry = {"id": response["jobId"], "name": response["jobName"]}
    if "condvest:stage" in tags:
        entry |= {"stage": tags["condvest:stage"], "part": tags.get("condvest:part", "")}
    return entry


def write_submission(record: dict[str, Any], settings: Settings) -> None:
    _store(settings).put(f"{SUBMISSIONS}/{record['run_id']}.json", json.dumps(record, indent=2).encode())


def read_submission(run_id: str, settings: Settings) -> dict[str, Any]:
    store = _store(settings)
    try:
        return json.loads(store.get(f"{SUBMISSIONS}/{run_id}.json"))
    except ObjectNotFound:
        raise ParameterError(f"no submission {run_id!r} under {store.url(SUBMISSIONS)}", parameter="run") from None


def plan_schedules(settings: Settings) -> list[dict[str, Any]]:
    """The job definitions the schedules submit, the dead-letter queue and its alarm (each made only when missing),
    then the schedules themselves."""
    calls: list[dict[str, Any]] = []
    for group in sorted({jobspec.group_of(p) for p, _ in schedules.schedules(settings)}):
        calls.append({"api": "batch.register_job_definition", "payload": batch.job_definition(group, settings)})
    calls.append({"api": "sqs.create_queue", "payload": schedules.dead_letter_queue(settings)})
    calls.append({"api": "cloudwatch.put_metric_alarm", "payload": schedules.missed_schedule_alarm(settings)})
    for pipeline, expression in schedules.schedules(settings):
        payload = schedules.schedule_payload(pipeline, expression, settings)
        calls.append({"api": "scheduler.create_schedule|update_schedule", "payload": payload})
    _check_payloads(calls, settings)
    return calls


def schedule(settings: Settings, *, apply: bool) -> int:
    calls = plan_schedules(complete_secret_arns(settings) if apply else settings)
    if not apply:
        _print_json({"calls": calls})
        return 0
    api, scheduler = client("batch", settings), client("scheduler", settings)
    sqs, cloudwatch = client("sqs", settings), client("cloudwatch", settings)
    dead_letters, made = schedules.ensure_dead_letters(sqs, cloudwatch, settings)
    print(f"dead-letter queue {dead_letters} ({', '.join(made) + ' created' if made else 'unchanged'})")
    for call in calls:
        payload = call["payload"]
        if call["api"].startswith("batch."):
            arn, registered = batch.ensure_job_definition(api, payload)
            print(f"job definition {arn} ({'registered' if registered else 'unchanged'})")
        elif call["api"].startswith("scheduler."):
            payload["Target"]["DeadLetterConfig"]["Arn"] = dead_letters
            done = schedules.apply(scheduler, payload)
            when = f"{payload['ScheduleExpression']} {payload['ScheduleExpressionTimezone']}"
            print(f"schedule {payload['Name']} {done}: {when}")
    return 0
