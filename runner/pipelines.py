"""Named pipelines: notebooks run in order, each in its own run folder under one pipeline run id.

A stage is a notebook and its fixed parameters. Pipeline-level parameters (``-p``) go to every stage
whose notebook declares them and override a stage's fixed value; a ``-p`` that no stage declares is
refused. The whole plan (notebooks present, parameters declared) is checked before the first stage runs,
and the pipeline stops at the first failing stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from condvest.errors import ParameterError
from condvest.params import run_id as check_run_id
from condvest.runs import new_run_id
from condvest.settings import Settings
from condvest.storage import Store, open_store
from runner.context import StageContext
from runner.execute import PreparedRun, RunOptions, RunResult, early_kernel, execute, prepare
from runner.images import ChartBrowser
from runner.kernel import WarmKernel
from runner.notebooks import check_parameters, declared_parameters, find_project_root
from runner.notebooks import resolve_notebook as _resolve
from runner.render import StageLink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    notebook: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


PIPELINES: dict[str, tuple[Stage, ...]] = {
    # the daily job: fetch the missing sessions, then resample (fixed resample parameters join it here)
    "daily": (Stage("01_fetch"), Stage("02_resample")),
    # the weekly job: archive what aged out, then the cache follows bronze (rows Postgres lost re-filled, no API call)
    "weekly": (Stage("04_retention", {"mode": "archive"}), Stage("04_retention", {"mode": "sync"})),
    # a full rebuild of silver; with --shards N split by symbol into N processes plus a commit
    "rebuild": (Stage("02_resample", {"force_full_resample": True, "compact": False}),),
    # a history backfill (-p start ... -p end ...), then silver rebuilt; with --shards N each stage is sharded
    "backfill": (Stage("01_fetch"), Stage("02_resample", {"force_full_resample": True, "compact": False})),
}


def get_pipeline(name: str) -> tuple[Stage, ...]:
    try:
        return PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(PIPELINES))
        raise ParameterError(f"no pipeline {name!r} (known: {known})", parameter="pipeline") from None


def plan_pipeline(
    name: str, stages: Sequence[Stage], parameters: Mapping[str, Any] | None, settings: Settings, root: Path
) -> list[PreparedRun]:
    """Check every stage before anything runs; raises ``ParameterError`` naming the stage at fault."""
    parameters = dict(parameters or {})
    check_parameters(parameters, settings.secrets(), None, f"pipeline {name}")
    used: set[str] = set()
    plan = []
    for i, stage in enumerate(stages, start=1):
        try:
            path = _resolve(stage.notebook, root)
        except ParameterError as exc:
            raise ParameterError(
                f"pipeline {name}, stage {i} ({stage.notebook}): {exc} -- the notebook does "
                "not exist yet; add it or take the stage out of runner/pipelines.py",
                parameter="notebook",
            ) from None
        declared = set(declared_parameters(path))
        chosen = {**stage.parameters, **{k: v for k, v in parameters.items() if k in declared}}
        used |= declared & parameters.keys()
        try:
            plan.append(prepare(path, chosen, settings, root))
        except ParameterError as exc:
            raise ParameterError(f"pipeline {name}, stage {i} ({path.name}): {exc}", parameter=exc.parameter) from None
    unused = sorted(parameters.keys() - used)
    if unused:
        raise ParameterError(f"no stage of pipeline {name} declares {', '.join(unused)}", parameter=unused[0])
    return plan


def run_pipeline(
    name: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    stages: Sequence[Stage] | None = None,
    settings: Settings | None = None,
    options: RunOptions = RunOptions(),
) -> list[RunResult]:
    """Run a pipeline (``stages``, default ``PIPELINES[name]``) into ``<runs>/<pipeline run id>/<run id>/``.

    Returns the results of the stages that ran; the last one failed when the pipeline stopped early.
    Raises ``ParameterError`` (nothing run, nothing written) when the plan does not check out.
    """
    settings = settings or Settings.from_env()
    root = (options.root or find_project_root()).resolve()
    stages = get_pipeline(name) if stages is None else tuple(stages)
    check_parameters(dict(parameters or {}), settings.secrets(), None, f"pipeline {name}")  # quick refusals first
    if options.run_id:
        check_run_id(options.run_id)
    first = early_kernel(stages[0].notebook, root) if stages else None  # starts while the plan is checked
    try:
        plan = plan_pipeline(name, stages, parameters, settings, root)
        pipeline_run_id = check_run_id(options.run_id) if options.run_id else new_run_id(name)
        store = open_store(options.runs_uri or settings.runs_uri, settings)
        log.info("pipeline started pipeline=%s pipeline_run_id=%s stages=%d", name, pipeline_run_id, len(plan))
        browser = ChartBrowser()  # one for the whole pipeline: started once, by the first stage that draws a chart
        try:
            pipeline = StageContext(name, pipeline_run_id, stages=len(plan), browser=browser, kernel=first)
            return _run_stages(plan, pipeline, settings=settings, store=store, root=root, options=options)
        finally:
            browser.close()
    finally:
        if first is not None:
            first.discard()  # a refused pipeline's kernel (nothing once the first stage took it)


def _run_stages(
    plan: Sequence[PreparedRun],
    pipeline: StageContext,
    *,
    settings: Settings,
    store: Store,
    root: Path,
    options: RunOptions,
) -> list[RunResult]:
    """Run the stages in order until one fails; ``pipeline.kernel`` is the first stage's kernel, started ahead."""
    run_ids = [new_run_id(p.path.stem) for p in plan]  # known up front: each page links its neighbours
    links = [StageLink(p.path.name, f"../{rid}/{p.path.stem}.html") for p, rid in zip(plan, run_ids, strict=True)]
    results: list[RunResult] = []
    warm = pipeline.kernel
    try:
        for i, prepared in enumerate(plan, start=1):
            nxt = WarmKernel.for_notebook(plan[i].path, root) if i < len(plan) else None
            context = replace(
                pipeline,
                stage=i,
                previous=links[i - 2] if i > 1 else None,
                next=links[i] if i < len(plan) else None,
                kernel=warm,
                next_kernel=nxt,
            )
            try:
                run_id = run_ids[i - 1]
                result = execute(
                    prepared, settings=settings, store=store, run_id=run_id, root=root, options=options, context=context
                )
            finally:
                if warm is not None:
                    warm.discard()  # nothing once execute took it
                warm = nxt  # discarded below unless the next stage takes it
            results.append(result)
            if not result.ok:
                log.warning(
                    "pipeline stopped pipeline=%s pipeline_run_id=%s stage=%d notebook=%s",
                    pipeline.pipeline,
                    pipeline.pipeline_run_id,
                    i,
                    prepared.path.name,
                )
                break
    finally:
        if warm is not None:
            warm.discard()
    return results
