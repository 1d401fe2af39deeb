"""What an alert says, without servers: the failing line of a cell (the error record's ``line``)."""

from __future__ import annotations

from runner.cloud.alerts import error_fields, failure_text
from runner.cloud.operate import record_line


def test_an_alert_names_the_line_that_raised_not_the_cells_first_line():
    # a failed cell's error record (CellError.as_dict()): ``line`` is the line that raised, ``source`` the cell's first
    record = {
        "cell": 5,
        "cell_index": 4,
        "source": "report = run_resample(params, settings=settings)",
        "line": "report.raise_for_status()",
        "lineno": 3,
        "ename": "ResampleFailed",
        "evalue": "3d: boom",
    }
    fields = error_fields(record)
    subject, text = failure_text("daily", "s3://b/runs/p/", stage=2, notebook="02_resample.ipynb", **fields)
    assert text.startswith(
        "condvest daily failed at stage 2 (02_resample.ipynb) cell 5, line 3 (`report.raise_for_status()`)"
    )
    assert "run_resample" not in text and "ResampleFailed: 3d: boom" in text
    assert '"lineno": 3' in text and subject == "condvest daily failed: stage 2, cell 5"
    status = record_line({"stage": 2, "notebook": "02_resample.ipynb", "status": "failed", "error": record})
    assert (
        status
        == "stage 2 02_resample.ipynb failed in cell 5, line 3 (`report.raise_for_status()`): ResampleFailed: 3d: boom"
    )
    # a record written before the line was kept names the cell's first line
    older = {k: v for k, v in record.items() if k not in ("line", "lineno")}
    assert (
        "cell 5 (`report = run_resample(params, settings=settings)`)"
        in failure_text("daily", None, **error_fields(older))[1]
    )
