"""Sharded runs, the same code path locally and in AWS Batch (``condvest.shards``).

    python -m runner run 02_resample -p force_full_resample True --shard 2/4 --shard-group G
    python -m runner job 02_resample --shard array/4 --shard-group G    (a Batch array child: I from
                                                                         AWS_BATCH_JOB_ARRAY_INDEX)
    python -m runner run 02_resample --shard commit/4 --shard-group G   (after all four)
    python -m runner pipeline rebuild --shards 4                        (all of it, locally)

``--shard`` sets the notebook parameters ``shard`` and ``shard_group``; the notebook refuses (exit 2) when it
declares neither. The runs of a sharded run go under ``<runs>/<group>/<run id>/``, so ``runner show G`` lists
them together. ``pipeline NAME --shards N`` runs each stage as N processes of ``python -m runner run ...
--shard i/N`` at once (each with DuckDB's memory limit divided by N), then, only when all N succeeded, the
stage's commit in this process; a failed or killed shard stops the pipeline before its commit (a commit run
anyway would refuse and write nothing).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from condvest.errors import ParameterError
from condvest.params import run_id as check_run_id
from condvest.runs import new_run_id, read_records
from condvest.settings import Settings
from condvest.shards import Shard
from condvest.storage import open_store
from runner.context import StageContext
from runner.execute import RunOptions, execute, prepare
from runner.notebooks import declared_parameters, find_project_root, parse_value
from runner.pipelines import get_pipeline, plan_pipeline
from runner.result import CellError, RunResult

log = logging.getLogger(__name__)

#: set by AWS Batch in each child of an array job: its index, 0 … size-1
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
_WHICH_RE = re.compile(r"^\s*(array|commit|\d+)\s*/\s*(\d+)\s*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*$", re.IGNORECASE)


def shard_parameters(which: str | None, group: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The notebook parameters of ``--shard I/N|array/N|commit/N --shard-group G`` (``{}`` without them)."""
    env = os.environ if env is None else env
    if which is None:
        if group:
            raise ParameterError("--shard-group is given without --shard", parameter="shard")
        return {}
    m = _WHICH_RE.match(which)
    if m is None:
        raise ParameterError(f"expected --shard I/N, array/N or commit/N, got {which!r}", parameter="shard")
    what, count = m.groups()
    if what == "array":
        index = env.get(ARRAY_INDEX_ENV, "")
        if not index.isdigit():
            raise ParameterError(
                f"--shard array/{count} takes its index from {ARRAY_INDEX_ENV}, which AWS Batch sets in the "
                "children of an array job; it is not set here",
                parameter="shard",
            )
        what = index
    if not group:
        raise ParameterError("--shard needs --shard-group, the id the shards and their commit share", parameter="shard")
    value = f"{what}/{count}"
    Shard.parse(value, group)  # the notebook's own check, before anything starts
    return {"shard": value, "shard_group": group}


def _divided(limit: str, shards: int) -> str:
    """DuckDB's memory limit of one of ``shards`` processes sharing a machine (at least 256 MB)."""
    m = _SIZE_RE.match(limit)
    if m is None:
        return limit
    unit = (m.group(2) or "B").upper().replace("I", "")
    mb = float(m.group(1)) * {"B": 1e-6, "KB": 1e-3, "MB": 1, "GB": 1e3, "TB": 1e6}[unit]
    return f"{max(256, int(mb / shards))}MB"


def _cli_value(name: str, value: Any) -> str:
    text = "None" if value is None else str(value)
    if parse_value(text) != value:
        raise ParameterError(f"{value!r} cannot be passed to a shard process on its command line", parameter=name)
    return text


def _from_record(record: Mapping[str, Any], runs_uri: str) -> RunResult:
    e = record.get("error")
    return RunResult(
        run_id=record["run_id"],
        notebook=record["notebook"],
        status=record["status"],
        parameters=dict(record.get("parameters") or {}),
        started_at=dt.datetime.fromisoformat(record["started_at"]),
        finished_at=dt.datetime.fromisoformat(record["finished_at"]),
        ipynb_key=record.get("ipynb"),
        html_key=record.get("html"),
        runs_uri=runs_uri,
        results=dict(record.get("results") or {}),
        error=CellError(**e) if e else None,
        pipeline=record.get("pipeline"),
        pipeline_run_id=record.get("pipeline_run_id"),
        stage=record.get("stage"),
        vcpu_seconds=record.get("vcpu_seconds"),
        gb_seconds=record.get("gb_seconds"),
    )


def _died(run_id: str, notebook: str, label: str, code: int, runs_uri: str, group: str, stage: int) -> RunResult:
    now = dt.datetime.now(dt.UTC)
    why = f"shard {label} exited with code {code} before recording its run (killed or crashed)"
    return RunResult(
        run_id, notebook, "failed", {}, now, now, None, None, runs_uri,
        error=CellError(None, None, "", "ShardDied", why), pipeline="sharded", pipeline_run_id=group, stage=stage,
    )  # fmt: skip


def run_pipeline_sharded(
    name: str,
    parameters: Mapping[str, Any] | None,
    shards: int,
    *,
    settings: Settings | None = None,
    options: RunOptions = RunOptions(),
) -> list[RunResult]:
    """Run pipeline ``name`` with each stage split into ``shards`` processes plus its commit (module docstring).
    Returns every shard's and commit's result; the last one failed when the pipeline stopped early."""
    settings = settings or Settings.from_env()
    if not 1 <= shards <= 256:
        raise ParameterError(f"--shards must be 1 to 256 on one machine, got {shards}", parameter="shards")
    root = (options.root or find_project_root()).resolve()
    plan = plan_pipeline(name, get_pipeline(name), parameters, settings, root)
    for p in plan:
        if "shard" not in declared_parameters(p.path):
            raise ParameterError(f"pipeline {name}: {p.path.name} cannot be sharded (no shard parameter)", "shards")
    group = check_run_id(options.run_id) if options.run_id else new_run_id(name)
    runs_uri = options.runs_uri or settings.runs_uri
    store = open_store(runs_uri, settings)
    env = {**os.environ, "CONDVEST_DUCKDB_MEMORY_LIMIT": _divided(settings.duckdb_memory_limit, shards)}
    results: list[RunResult] = []
    log.info("sharded pipeline started pipeline=%s group=%s shards=%d", name, group, shards)
    for stage, prepared in enumerate(plan, start=1):
        args: list[str] = []
        for k, v in prepared.parameters.items():
            args += ["-p", k, _cli_value(k, v)]
        ids = [new_run_id(f"{prepared.path.stem}-shard{i}") for i in range(shards)]
        timeout = options.execution_timeout or 0
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "runner", "run", str(prepared.path), *args]
                + ["--shard", f"{i}/{shards}", "--shard-group", group, "--run-id", ids[i]]
                + ["--runs-dir", runs_uri, "--cwd", str(root), "--no-progress", "--timeout", f"{timeout:g}"],
                env=env,
                cwd=root,
                stdout=subprocess.DEVNULL,  # its summary line is printed from the run index below
            )
            for i in range(shards)
        ]
        codes = [p.wait() for p in procs]
        records = {r.get("run_id"): r for r in read_records(store)}
        for i, (rid, code) in enumerate(zip(ids, codes, strict=True)):
            if rid in records:
                results.append(_from_record(records[rid], store.uri))
            else:
                results.append(_died(rid, prepared.path.name, f"{i}/{shards}", code, store.uri, group, stage))
        if not all(r.ok for r in results[-shards:]):
            log.warning("sharded pipeline stopped before the commit pipeline=%s stage=%d", name, stage)
            return results
        commit = prepare(
            prepared.path, {**prepared.parameters, "shard": f"commit/{shards}", "shard_group": group}, settings, root
        )
        context = StageContext(pipeline=name, pipeline_run_id=group, stage=stage, stages=len(plan))
        run_id = new_run_id(f"{prepared.path.stem}-commit")
        result = execute(
            commit, settings=settings, store=store, run_id=run_id, root=root, options=options, context=context
        )
        results.append(result)
        if not result.ok:
            return results
    return results
