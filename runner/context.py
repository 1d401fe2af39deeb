"""Where a run stands: on its own, a shard of a sharded run, or stage i of n of a pipeline (``StageContext``),
and what its pipeline shares with it (the chart browser, the kernels started ahead)."""

from __future__ import annotations

from dataclasses import dataclass

from runner.images import ChartBrowser
from runner.kernel import WarmKernel
from runner.render import StageLink


@dataclass(frozen=True)
class StageContext:
    """A run's place in its pipeline, passed to ``runner.execute.execute`` (the default: a run of its own).

    ``pipeline``/``pipeline_run_id``: the pipeline's name and run id (a shard: ``"sharded"`` and its group); the
    run folder goes under ``<pipeline_run_id>/``. ``stage``/``stages``: its position (1-based) and the number of
    stages; ``previous``/``next``: the neighbouring stages' pages, linked from the header. ``browser``: the chart
    PNGs' browser the stages share, closed by the caller (``None``: one for this run, closed at its end).
    ``kernel``: this run's kernel, started ahead (``None``: one is started for it); ``next_kernel``: the next
    stage's, started by this run once the cell after its imports starts."""

    pipeline: str | None = None
    pipeline_run_id: str | None = None
    stage: int | None = None
    stages: int | None = None
    previous: StageLink | None = None
    next: StageLink | None = None
    browser: ChartBrowser | None = None
    kernel: WarmKernel | None = None
    next_kernel: WarmKernel | None = None

    @classmethod
    def of_run(cls, group: str | None, kernel: WarmKernel | None = None) -> StageContext:
        """A run of its own, or (``group``) a shard of the sharded run ``group``."""
        if group:
            return cls(pipeline="sharded", pipeline_run_id=group, kernel=kernel)
        return cls(kernel=kernel)

    @property
    def folder(self) -> str | None:
        """The folder that holds the run folder: the pipeline's or the sharded run's id (``None``: the top)."""
        return self.pipeline_run_id

    @property
    def charts_ahead(self) -> bool:
        """Whether this run charts what the stages before it just wrote (a later stage of a pipeline): its
        figures are new, so the chart browser starts as its chart cell starts."""
        return self.stage is not None and self.stage > 1
