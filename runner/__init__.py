"""``python -m runner``: papermill execution of the workbench's notebooks, run folders and the run index.

    python -m runner run 01_fetch -p date 2026-11-27      one notebook -> <runs>/<run id>/01_fetch.ipynb|html
    python -m runner pipeline daily -p as_of 2026-11-27   the stages of a named pipeline, in order
    python -m runner list                                 recent runs from <runs>/index/ (one record per run)

A notebook records result figures for the index by displaying a JSON object under
``RESULT_MIMETYPE`` (``application/vnd.condvest.result+json``); the runner merges them into ``results``.
Importing this package does nothing beyond defining names.
"""

from condvest.runs import INDEX_KEY, new_run_id, read_index, read_records
from runner.execute import RunOptions, run_notebook
from runner.pipelines import PIPELINES, Stage, run_pipeline
from runner.result import RESULT_MIMETYPE, CellError, RunResult

__all__ = [
    "INDEX_KEY",
    "PIPELINES",
    "RESULT_MIMETYPE",
    "CellError",
    "RunOptions",
    "RunResult",
    "Stage",
    "new_run_id",
    "read_index",
    "read_records",
    "run_notebook",
    "run_pipeline",
]
