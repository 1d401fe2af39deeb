"""Exploring is safe: ``make lab`` works on ``lab/``, a working copy of ``notebooks/`` refreshed from the sources
without overwriting a researcher's change; a deliberate edit of ``notebooks/`` saves without outputs."""

from __future__ import annotations

import copy
import json

import nbformat
from jupyter_server.services.contents.filemanager import FileContentsManager

from condvest.offline.lab import jupyter_command
from condvest.offline.workcopy import refresh_working_copy, strip_for_source


def _nb(source: str, *, ran: bool = False) -> dict:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    params = nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
    ref = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n1 + 1")
    ref.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=2)]
    ref.execution_count = 2
    chart = nbformat.v4.new_code_cell("figure")
    if ran:
        chart.outputs = [nbformat.v4.new_output("display_data", {"text/html": "<div>" + "x" * 1000 + "</div>"})]
        chart.execution_count = 3
        params.execution_count = 1
    nb.cells = [params, ref, chart]
    return json.loads(nbformat.writes(nb))


def _params(path) -> str:
    return "".join(json.loads(path.read_text())["cells"][0]["source"])


def _write(path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


def test_the_working_copy_is_refreshed_but_a_researchers_change_is_kept(tmp_path):
    src, work = tmp_path / "notebooks", tmp_path / "lab"
    _write(src / "06_explore.ipynb", _nb('symbols = ""'))
    _write(src / "01_fetch.ipynb", _nb("date = None"))
    assert refresh_working_copy(src, work) == []
    assert (work / "06_explore.ipynb").read_bytes() == (src / "06_explore.ipynb").read_bytes()
    # the researcher explores 06; both sources change upstream
    _write(work / "06_explore.ipynb", _nb('symbols = "BQFG"', ran=True))
    _write(src / "06_explore.ipynb", _nb('symbols = ""\nstart = None'))
    _write(src / "01_fetch.ipynb", _nb("date = None\nforce = False"))
    said = refresh_working_copy(src, work)
    assert _params(work / "06_explore.ipynb") == 'symbols = "BQFG"'
    assert (work / "06_explore.source.ipynb").read_bytes() == (src / "06_explore.ipynb").read_bytes()
    assert (work / "01_fetch.ipynb").read_bytes() == (src / "01_fetch.ipynb").read_bytes(), "an untouched copy follows"
    assert said == [
        "01_fetch.ipynb: refreshed, its source " + str(src / "01_fetch.ipynb") + " changed",
        "06_explore.ipynb: kept your changed copy; its source "
        + str(src / "06_explore.ipynb")
        + " changed too, the new source is 06_explore.source.ipynb",
    ]
    assert refresh_working_copy(src, work) == [], "said once"
    _write(src / "06_explore.ipynb", _nb('symbols = ""\nstart = "-3M"'))
    refresh_working_copy(src, work)
    assert _params(work / "06_explore.ipynb") == 'symbols = "BQFG"'
    (work / "01_fetch.ipynb").unlink()
    assert refresh_working_copy(src, work)[0].startswith("01_fetch.ipynb: copied again")


def test_a_deliberate_edit_of_a_source_notebook_saves_without_outputs(tmp_path):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "lab").mkdir()
    (root / "pyproject.toml").write_text("")
    cm = FileContentsManager(root_dir=str(root), pre_save_hook=strip_for_source)
    ran = _nb('symbols = "BQFG"', ran=True)
    cm.save({"type": "notebook", "format": "json", "content": copy.deepcopy(ran)}, "notebooks/06_explore.ipynb")
    saved = json.loads((root / "notebooks" / "06_explore.ipynb").read_text())
    assert "".join(saved["cells"][0]["source"]) == 'symbols = "BQFG"', "the edit itself is kept"
    assert [c["outputs"] for c in saved["cells"]][::2] == [[], []] and saved["cells"][2]["execution_count"] is None
    assert "".join(saved["cells"][1]["outputs"][0]["data"]["text/plain"]) == "2", "nbval's reference is kept"
    cm.save({"type": "notebook", "format": "json", "content": copy.deepcopy(ran)}, "lab/06_explore.ipynb")
    assert json.loads((root / "lab" / "06_explore.ipynb").read_text())["cells"][2]["outputs"], "the copy keeps them"


def test_jupyterlab_opens_the_working_copy_or_the_sources_with_the_save_hook(tmp_path):
    default = jupyter_command(tmp_path, [])
    assert f"--ServerApp.root_dir={tmp_path / 'lab'}" in default
    sources = jupyter_command(tmp_path, [], sources=True)
    assert f"--ServerApp.root_dir={tmp_path / 'notebooks'}" in sources
    assert "--ContentsManager.pre_save_hook=condvest.offline.workcopy.strip_for_source" in sources
