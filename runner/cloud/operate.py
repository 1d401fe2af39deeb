"""``status``, ``logs``, ``rerun`` and ``cancel``: a submitted run followed to its outcome, read, repaired, stopped.

Each reads the submission record ``submit`` wrote (``_submissions/<run id>.json``: the backend, the jobs with
their stage and part) and asks the backend about those jobs.

``status`` polls until every job ended, then judges the run from the jobs and the run index together: a run is
ok when every job succeeded, or when what failed was repaired (a sharded stage whose latest commit succeeded:
the failed array job and the commit that never started were replaced by ``rerun``), and the latest record of
each notebook, shard and stage in the run index is ok. It names each failed shard, its attempt and cell.
``logs`` prints a job's CloudWatch Logs stream (``--follow``: until the job ends); ``rerun --shard I``
re-submits one shard of a sharded run and, depending on it, the stage's commit and the later stages;
``cancel`` cancels or terminates every job of the run that has not ended.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from condvest.errors import ParameterError
from condvest.runs import read_records
from condvest.settings import Settings
from condvest.storage import open_store
from runner.cloud import batch, jobspec, sagemaker
from runner.cloud.alerts import BATCH_LOG_GROUP, error_fields
from runner.cloud.aws import client
from runner.cloud.submit import job_entry, read_submission, write_submission

EXIT_RUNNING = 4


def backend_states(record: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """The state of each job of the run; a job the Spot fallback moved to the on-demand queue brings its
    replacement into the run (kept in the submission record, ``moved_from`` naming the job it replaced)."""
    ids = [j["id"] for j in record["jobs"]]
    if record["backend"] != "batch":
        return sagemaker.states(client("sagemaker", settings), ids)
    states = batch.states(client("batch", settings), ids)
    moved = [s for s in states if s.get("moved_to") and s["moved_to"] not in ids]
    if not moved:
        return states
    for s in moved:
        old = next(j for j in record["jobs"] if j["id"] == s["id"])
        record["jobs"].append({**old, "id": s["moved_to"], "moved_from": s["id"]})
        print(f"batch job {s['id']} was moved to the on-demand queue as {s['moved_to']} (Spot had no capacity)")
    write_submission(record, settings)
    return backend_states(record, settings)


def moved(states: list[dict[str, Any]]) -> set[str]:
    """Ids of the jobs the Spot fallback replaced (their replacement is followed instead)."""
    return {s["id"] for s in states if s.get("moved_to")}


def _terminal(record: dict[str, Any], state: dict[str, Any]) -> bool:
    done = batch.TERMINAL if record["backend"] == "batch" else sagemaker.TERMINAL
    return state["status"] in done or state["status"] == "UNKNOWN"


def _succeeded(record: dict[str, Any], state: dict[str, Any]) -> bool:
    return state["status"] == ("SUCCEEDED" if record["backend"] == "batch" else "Completed")


def _stages(record: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The jobs of a sharded run by stage notebook, in submission order (``{}`` for a run of one job)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for j in record["jobs"]:
        if j.get("stage"):
            out.setdefault(j["stage"], []).append(j)
    return out


def repaired(record: dict[str, Any], states: list[dict[str, Any]]) -> set[str]:
    """Ids of the jobs whose failure a later job repaired: every job of a stage whose latest commit succeeded."""
    status = {s["id"]: s["status"] for s in states}
    out: set[str] = set()
    for jobs in _stages(record).values():
        commits = [j for j in jobs if j.get("part") == "commit"]
        if commits and status.get(commits[-1]["id"]) == "SUCCEEDED":
            out |= {j["id"] for j in jobs}
    return out


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r.get("notebook"), (r.get("parameters") or {}).get("shard"), r.get("stage"))


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest record of each (notebook, shard, stage): a retry or a re-run shard replaces the failed one."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        latest[_key(r)] = r
    return list(latest.values())


def record_line(r: dict[str, Any]) -> str:
    """``stage 1 02_resample.ipynb shard 1/3 attempt 2 failed in cell 5 (`...`): ename: message``."""
    shard = (r.get("parameters") or {}).get("shard")
    what = (f"stage {r['stage']} " if r.get("stage") else "") + str(r.get("notebook"))
    what += f" shard {shard}" if shard else ""
    what += f" attempt {r['attempt']}" if (r.get("attempt") or 1) > 1 else ""
    line = f"{what} {r.get('status')}"
    err = r.get("error") or {}
    if err:
        at = error_fields(err)
        line_no = f", line {at['lineno']}" if at["lineno"] else ""
        cell = f" in cell {err['cell']}{line_no} (`{at['source']}`)" if err.get("cell") is not None else ""
        message = (str(err.get("evalue") or "").strip().splitlines() or [""])[0]
        line += f"{cell}: {err.get('ename')}: {message}"
    return line


def _poll(
    record: dict[str, Any],
    settings: Settings,
    poll: float,
    deadline: float | None,
    sleep: Callable[[float], None],
) -> list[dict[str, Any]] | None:
    """Poll the jobs until all ended (their states) or the deadline passed (``None``), printing each change."""
    last: list[tuple[str, str]] = []
    while True:
        states = backend_states(record, settings)
        now = [(s["id"], s["status"]) for s in states]
        if now != last:
            for s in states:
                tries = f" attempt {s['attempts']}" if (s.get("attempts") or 1) > 1 else ""
                reason = f" ({s['reason']})" if s["reason"] else ""
                print(f"{record['backend']} job {s['id']}{tries}: {s['status']}{reason}")
            last = now
        if all(_terminal(record, s) for s in states):
            return states
        if deadline is not None and time.monotonic() > deadline:
            return None
        sleep(poll)


def _records(record: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """The run index records of a submitted run (its own, its stages' and its shards'), oldest first."""
    run_id = record["run_id"]
    runs = open_store(record["runs_uri"], settings)
    return [r for r in read_records(runs) if run_id in (r.get("run_id"), r.get("pipeline_run_id"))]


def follow(
    run_id: str,
    settings: Settings,
    *,
    poll: float = 30.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Follow a submitted run until its jobs end; print each change and the outcome; return the exit code."""
    record = read_submission(run_id, settings)
    states = _poll(record, settings, poll, None if timeout is None else time.monotonic() + timeout, sleep)
    if states is None:
        print(f"status {run_id}: still running after {timeout:.0f} s", file=sys.stderr)
        return EXIT_RUNNING
    mine = _records(record, settings)
    latest = latest_records(mine)
    for r in mine:
        if r not in latest:
            print(f"{record_line(r)} (replaced by a later run)", file=sys.stderr if r["status"] != "ok" else sys.stdout)
    for r in latest:
        print(record_line(r), file=sys.stdout if r["status"] == "ok" else sys.stderr)
    folder = f"{record['runs_uri'].rstrip('/')}/{run_id}/"
    fixed = repaired(record, states) | moved(states)
    failed_jobs = [s for s in states if not _succeeded(record, s) and s["id"] not in fixed]
    if failed_jobs:
        why = "; ".join(f"{s['id']} {s['status']}: {s['reason'] or 'no reason given'}" for s in failed_jobs)
        print(f"run {run_id} failed: {why} [{folder}]", file=sys.stderr)
        return 1
    if not mine:
        print(f"run {run_id}: the job ended but recorded no run in {record['runs_uri']}", file=sys.stderr)
        return 1
    if any(r["status"] != "ok" for r in latest):
        print(f"run {run_id} failed [{folder}]", file=sys.stderr)
        return 1
    print(f"run {run_id} ok{' (repaired)' if fixed and len(mine) > len(latest) else ''} [{folder}]")
    return 0


def _batch_only(record: dict[str, Any], what: str) -> None:
    if record["backend"] != "batch":
        raise ParameterError(
            f"{what} works on Batch runs; {record['run_id']} ran in {record['backend']}", parameter="run"
        )


def _shard_job(record: dict[str, Any], shard: int | None, states: dict[str, str]) -> str:
    """The job id whose logs ``logs`` prints: shard ``shard``'s latest (a re-run, else the array child ``id:I``
    of the first stage not committed), or the run's first job that did not succeed (else its last)."""
    if shard is None:
        replaced = {j.get("moved_from") for j in record["jobs"]}
        live = [j for j in record["jobs"] if j["id"] not in replaced]
        return next((j["id"] for j in live if states.get(j["id"]) != "SUCCEEDED"), live[-1]["id"])
    if record.get("shards") is None or not 0 <= shard < record["shards"]:
        raise ParameterError(
            f"{record['run_id']} has no shard {shard} (shards: {record.get('shards')})", parameter="shard"
        )
    reruns = [j for j in record["jobs"] if j.get("part") == f"shard-{shard}"]
    if reruns:
        return str(reruns[-1]["id"])
    arrays = [j for j in record["jobs"] if j.get("part") == "shards"]
    open_stage = next((jobs for jobs in _stages(record).values() if not _committed(jobs, states)), None)
    array = next((j for j in (open_stage or []) if j.get("part") == "shards"), arrays[-1])
    return f"{array['id']}:{shard}"


def _committed(jobs: list[dict[str, Any]], states: dict[str, str], records: list[dict[str, Any]] | None = None) -> bool:
    """Whether a sharded stage is committed: its latest commit job succeeded and (``records``: the run's records)
    the latest record of its commit run is ok."""
    commits = [j for j in jobs if j.get("part") == "commit"]
    if not commits or states.get(commits[-1]["id"]) != "SUCCEEDED":
        return False
    if records is None:
        return True
    stage = str(jobs[0].get("stage", "")).removesuffix(".ipynb")
    mine = [
        r
        for r in latest_records(records)
        if str(r.get("notebook", "")).removesuffix(".ipynb") == stage
        and str((r.get("parameters") or {}).get("shard", "")).startswith("commit/")
    ]
    return bool(mine) and all(r.get("status") == "ok" for r in mine)


def log_stream(api: Any, logs_api: Any, job: dict[str, Any]) -> tuple[str, str | None]:
    """(log group, stream) of a described Batch job: the stream Batch names, else the stream of the job's group
    in which the runner's first line names the job id (``None``: no output yet)."""
    container = job.get("container") or {}
    group = (container.get("logConfiguration") or {}).get("options", {}).get("awslogs-group") or BATCH_LOG_GROUP
    if container.get("logStreamName"):
        return group, container["logStreamName"]
    found = logs_api.filter_log_events(logGroupName=group, filterPattern=f'"{job["jobId"]}"', limit=1)
    events = found.get("events") or []
    return group, events[0]["logStreamName"] if events else None


def logs(
    run_id: str,
    settings: Settings,
    *,
    shard: int | None = None,
    follow_on: bool = False,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the log stream of a run's job (``shard``: that shard's); ``follow_on``: until the job ends."""
    record = read_submission(run_id, settings)
    _batch_only(record, "logs")
    api, logs_api = client("batch", settings), client("logs", settings)
    states = {s["id"]: s["status"] for s in backend_states(record, settings)}
    job_id = _shard_job(record, shard, states)
    token: str | None = None
    while True:
        [job] = api.describe_jobs(jobs=[job_id])["jobs"] or [{"jobId": job_id, "status": "UNKNOWN"}]
        group, stream = log_stream(api, logs_api, job)
        while stream is not None:
            page = logs_api.get_log_events(
                logGroupName=group, logStreamName=stream, startFromHead=True, **({"nextToken": token} if token else {})
            )
            for event in page["events"]:
                print(event["message"])
            if page.get("nextForwardToken") in (None, token):
                break
            token = page["nextForwardToken"]
        if not follow_on or job["status"] in batch.TERMINAL or job["status"] == "UNKNOWN":
            break
        sleep(poll)
    if stream is None:
        print(f"batch job {job_id} ({job['status']}): no log stream in {group} yet", file=sys.stderr)
        return 1
    print(f"batch job {job_id} ({job['status']}): log stream {group} {stream}", file=sys.stderr)
    return 0


def _resubmit(
    api: Any,
    job_id: str,
    name: str,
    part: str,
    command: list[str],
    after: str | None,
    size: dict[str, Any],
    queue: str | None = None,
) -> dict[str, Any]:
    """Submit a copy of the described job ``job_id`` with ``command`` (no array), depending on ``after``: the same
    definition, the container ``size`` (``batch.sized_overrides``), the same queue unless ``queue``."""
    [old] = api.describe_jobs(jobs=[job_id])["jobs"]
    tags = {**(old.get("tags") or {}), "condvest:part": part}
    payload: dict[str, Any] = {
        "jobName": name[:128],
        "jobQueue": queue or old["jobQueue"],
        "jobDefinition": old["jobDefinition"],
        "containerOverrides": {"command": command, **size},
        "tags": tags,
        "propagateTags": True,
    }
    if after is not None:
        payload["dependsOn"] = [{"jobId": after}]
    response = api.submit_job(**payload)
    return job_entry(response, payload)


def _command(api: Any, job_id: str) -> list[str]:
    [job] = api.describe_jobs(jobs=[job_id])["jobs"]
    return list((job.get("container") or {}).get("command") or [])


def rerun(run_id: str, shard: int, settings: Settings, *, queue: str | None = None) -> int:
    """Re-submit shard ``shard`` of the first stage of a sharded run that is not committed, then that stage's
    commit (depending on it) and each later stage (array, then commit), into ``queue`` when given (the on-demand
    queue after Spot had no capacity), else each job's own; the record keeps the new jobs."""
    record = read_submission(run_id, settings)
    _batch_only(record, "rerun")
    shards = record.get("shards")
    if shards is None:
        raise ParameterError(f"{run_id} is not a sharded run: submit it again instead", parameter="shard")
    if not 0 <= shard < shards:
        raise ParameterError(f"{run_id} has shards 0 to {shards - 1}, not {shard}", parameter="shard")
    api = client("batch", settings)
    states = {s["id"]: s["status"] for s in batch.states(api, [j["id"] for j in record["jobs"]])}
    records = _records(record, settings)
    stages = [(nb, jobs) for nb, jobs in _stages(record).items() if not _committed(jobs, states, records)]
    if not stages:
        print(f"run {run_id}: every stage is committed; nothing to re-run", file=sys.stderr)
        return 0
    after: str | None = None
    for k, (notebook, jobs) in enumerate(stages):
        array = next(j for j in jobs if j.get("part") == "shards")
        commit = [j for j in jobs if j.get("part") == "commit"][-1]
        group = jobspec.group_of(notebook)  # sized as now set: CONDVEST_JOB_SIZES can give a shard more memory
        shard_size = batch.sized_overrides(f"{group}-shard", settings)
        if k == 0:
            command = _command(api, array["id"])
            command[command.index("--shard") + 1] = f"{shard}/{shards}"
            name, part = f"{array['name']}-rerun-{shard}", f"shard-{shard}"
            new = _resubmit(api, array["id"], name, part, command, after, shard_size, queue)
        else:  # a later stage never ran: all of it again
            command = _command(api, array["id"])
            new = _resubmit(api, array["id"], f"{array['name']}-again", "shards", command, after, shard_size, queue)
        commit_size = batch.sized_overrides(f"{group}-commit", settings)
        command = _command(api, commit["id"])
        name = f"{commit['name']}-again"
        done = _resubmit(api, commit["id"], name, "commit", command, new["id"], commit_size, queue)
        record["jobs"] += [new, done]
        after = done["id"]
        print(f"re-submitted {notebook}: {new['name']} ({new['id']}), then its commit ({done['id']})")
    write_submission(record, settings)
    print(f"follow it: python -m runner status {run_id}")
    return 0


def cancel(run_id: str, settings: Settings, *, reason: str = "") -> int:
    """Cancel (not started) or terminate (running) every job of the run that has not ended."""
    record = read_submission(run_id, settings)
    why = reason or f"cancelled: python -m runner cancel {run_id}"
    states = backend_states(record, settings)
    live = [s for s in states if not _terminal(record, s)]
    if record["backend"] == "batch":
        api = client("batch", settings)
        for s in live:
            api.terminate_job(jobId=s["id"], reason=why)  # cancels a job that has not started, stops a running one
    else:
        sm = client("sagemaker", settings)
        for s in live:
            sm.stop_processing_job(ProcessingJobName=s["id"])
    for s in live:
        print(f"{record['backend']} job {s['id']} ({s['status']}): stopping")
    print(f"run {run_id}: {len(live)} of {len(states)} jobs stopped ({len(states) - len(live)} had ended)")
    return 0
