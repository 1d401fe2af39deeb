"""The runner's papermill engine is found the way papermill finds engines: its entry point."""

from __future__ import annotations

from papermill.engines import papermill_engines

from runner.engine import RunnerEngine
from runner.kernel import ENGINE_NAME


def test_papermill_finds_the_runners_engine_through_its_entry_point():
    assert papermill_engines.get_engine(ENGINE_NAME) is RunnerEngine
