"""Pages that tell the truth, without a kernel (README fault rows 45 and 46): the failing line of a cell is read
from the kernel's traceback and shown in the summary and the page header (linked to the cell); progress bars
appear in their final state or not at all, with no widget repr; the note about the source notebook's reference
outputs never reaches an executed page; a typo is refused by the stage's own check."""

from __future__ import annotations

import datetime as dt

import nbformat
import pytest

from condvest.errors import ParameterError
from runner.preflight import check_stage_parameters
from runner.render import REFERENCE_NOTE_TAG, RunHeader, executed_page_cells, run_page
from runner.result import Execution, RunResult, find_failure
from runner.scrub import Scrubber
from runner.widgets import WIDGET_STATE_MIMETYPE, WIDGET_VIEW_MIMETYPE, bar_text, settle_widgets
from tests.fixtures.paths import ROOT

#: IPython's traceback of ``ratio = x / divisor`` failing on line 2 of ``In[3]``, as an executed notebook stores it
TRACEBACK = [
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m",
    "\x1b[31mZeroDivisionError\x1b[39m                         Traceback (most recent call last)",
    "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[3]\x1b[39m\x1b[32m, line 2\x1b[39m\n\x1b[32m      1\x1b[39m "
    "\x1b[38;5;28;01mimport\x1b[39;00m math\n\x1b[32m----> \x1b[39m\x1b[32m2\x1b[39m ratio = x / divisor\n"
    "\x1b[32m      3\x1b[39m print(ratio)\n",
    "\x1b[31mZeroDivisionError\x1b[39m: division by zero",
]


def _failed_notebook():
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    cell = nbformat.v4.new_code_cell("import math\nratio = x / divisor\nprint(ratio)", execution_count=3)
    cell.id = "ratio"
    cell.outputs = [
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=TRACEBACK)
    ]
    nb.cells = [first, cell]
    return nb


def test_a_cell_failure_names_the_line_that_raised():
    error = find_failure(_failed_notebook())
    assert (error.source, error.line, error.lineno, error.cell_id) == ("import math", "ratio = x / divisor", 2, "ratio")
    assert error.as_dict()["line"] == "ratio = x / divisor" and error.as_dict()["lineno"] == 2
    now = dt.datetime.now(dt.UTC)
    result = RunResult("r1", "x.ipynb", "failed", {}, now, now, None, "r1/x.html", "runs", error=error)
    assert "failed in cell 3 (`ratio = x / divisor`): ZeroDivisionError: division by zero" in result.summary()


def test_a_failed_page_header_shows_the_error_line_and_links_the_cell():
    header = RunHeader(
        "r1",
        "x.ipynb",
        "failed",
        dt.datetime.now(dt.UTC),
        1.0,
        failing_cell="cell 3, line 2",
        error="ZeroDivisionError: division by zero",
        error_line="ratio = x / divisor",
        failing_cell_id="ratio",
    ).markdown()
    assert "**failed** in [cell 3, line 2](#cell-id=ratio)" in header
    assert "| error | `ZeroDivisionError: division by zero` at `ratio = x / divisor` |" in header
    page = run_page(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(header), *_failed_notebook().cells]),
                    Scrubber([])).html  # fmt: skip
    assert 'href="#cell-id=ratio"' in page and 'id="cell-id=ratio"' in page


def _widget(model: str, **state):
    return {"model_name": model, "model_module": "@jupyter-widgets/controls", "state": state}


def _bars_notebook():
    """Three tqdm bars as a kernel leaves them (first frame as text, final state in the metadata: one finished,
    one hidden at its end by ``leave=False``) and DuckDB's bare progress widget."""
    states = {}
    outputs = []
    for i, (done, hidden) in enumerate([(6, False), (28, True)]):
        states[f"l{i}"] = _widget("LayoutModel", visibility="hidden" if hidden else None)
        states[f"a{i}"] = _widget("HTMLModel", value="silver\u2007intervals:\u2007100%" if not hidden else "93%")
        states[f"p{i}"] = _widget("FloatProgressModel", value=float(done), max=float(done if not hidden else 30))
        states[f"b{i}"] = _widget("HTMLModel", value=f"\u2007{done}/{done}\u2007[00:13&lt;00:00,\u20072.17s/interval]")
        children = [f"IPY_MODEL_{k}{i}" for k in "apb"]
        states[f"box{i}"] = _widget("HBoxModel", children=children, layout=f"IPY_MODEL_l{i}")
        outputs.append(f"box{i}")
    states["duck"] = _widget("FloatProgressModel", value=100.0, max=100.0)
    outputs.append("duck")
    cell = nbformat.v4.new_code_cell("run()", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                WIDGET_VIEW_MIMETYPE: {"model_id": m, "version_major": 2, "version_minor": 0},
                "text/plain": "FloatProgress(value=0.0)" if m == "duck" else "silver intervals:   0%|          | 0/6",
            },
        )
        for m in outputs
    ]
    cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="a  0%|\ra 50%|\ra100%|\ndone\n"))
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {WIDGET_STATE_MIMETYPE: {"state": states, "version_major": 2, "version_minor": 0}}
    return nb


def test_progress_bars_show_their_final_state_or_nothing_and_no_widget_repr():
    nb = _bars_notebook()
    assert "0%|" in nbformat.writes(nb) and "FloatProgress(" in nbformat.writes(nb)  # what a page showed before
    settled = settle_widgets(nb)
    texts = [o.get("data", {}).get("text/plain") or o.get("text") for o in settled.cells[0].outputs]
    assert texts == ["silver intervals: 100% ██████████ 6/6 [00:13<00:00, 2.17s/interval]", "a100%|\ndone\n"]
    assert "widgets" not in settled.metadata
    html = run_page(settled, Scrubber([])).html
    assert "0%|" not in html.replace("a100%|", "") and "FloatProgress(" not in html and "████" in html
    assert bar_text(1, 2) == "█████     " and bar_text(0, 0) == " " * 10 and bar_text(9, 8) == "█" * 10


@pytest.mark.parametrize("stem", ["01_fetch", "02_resample", "03_migrate", "04_retention", "05_monitoring"])
def test_the_reference_output_note_shows_in_the_source_only(stem):
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    notes = [c for c in nb.cells if REFERENCE_NOTE_TAG in c.metadata.get("tags", [])]
    assert notes and all("not your lake" in c.source for c in notes)
    assert not any("not your lake" in c.source for c in nb.cells if c not in notes), "the note stands in its own cell"
    page = run_page(executed_page_cells(nb), Scrubber([])).html
    assert "not your lake" not in page and "reference output of the offline demo" not in page


REFUSED = [
    ("02_resample", {"intervals": "3,x"}, "parameter intervals: intervals must be positive integers separated"),
    ("01_fetch", {"date": "2026-02-30"}, "parameter date: invalid date '2026-02-30': day is out of range for month"),
    ("06_explore", {"symbols": "BRK/A"}, "parameter symbols: invalid symbol 'BRK/A': a ticker is 1 to 16 letters"),
    ("05_monitoring", {"as_of": "2025-1-5"}, "parameter as_of: expected a date written YYYY-MM-DD, got '2025-1-5'"),
]


@pytest.mark.parametrize(("stem", "parameters", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_the_pre_flight_uses_the_stages_own_checks(stem, parameters, words):
    with pytest.raises(ParameterError) as err:
        check_stage_parameters(ROOT / "notebooks" / f"{stem}.ipynb", parameters)
    assert words in str(err.value)
    check_stage_parameters(ROOT / "notebooks" / f"{stem}.ipynb", {})  # the defaults pass
    check_stage_parameters("my_own.ipynb", parameters)  # a notebook of one's own: the generic checks only


def test_an_aborted_run_has_no_line():
    now = dt.datetime.now(dt.UTC)
    error = Execution(None, now, now, TimeoutError("cell timed out"), aborted=True).error()
    assert (error.line, error.lineno) == ("", None) and "line" in error.as_dict()
