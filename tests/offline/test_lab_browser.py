"""Exploring is safe, in a real browser: JupyterLab as ``make lab`` opens it (on ``lab/``, the working copy),
driven by Playwright in the system Chromium: open 06_explore, change its parameters, run all, wait past
autosave. ``git status`` shows the notebooks unchanged and the next ``runner run 06_explore`` runs the
documented defaults."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time

import nbformat
import pytest

from condvest.calendar import last_n_sessions
from condvest.resample import ResampleParams, run_resample
from condvest.settings import Settings
from condvest.storage import open_store
from runner.execute import RunOptions, run_notebook
from tests.fixtures.browser import CHROMIUM
from tests.fixtures.lab import lab_server
from tests.fixtures.paths import ROOT
from tests.fixtures.resample import write_history

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="needs the system Chromium"),
]

DAYS = last_n_sessions(dt.date(2025, 10, 17), 60)
EXPLORED = (
    'symbols = "BBB"\ninterval = 3\nstart = "-1M"\nend = None\ncompare = "1,3"\nreturns_over = 5\nreturns_on = None\n'
)


def _git(root, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout


def _project(tmp_path):
    """A clone of the project's notebooks (and .gitignore) under git, with a small lake of AAA and BBB."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")
    (root / "pyproject.toml").write_text("[project]\nname = 'lab-copy'\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "sources")
    settings = Settings(lake_uri=str(root / "lake"), runs_uri=str(root / "runs"), home=root / ".condvest")
    store = open_store(settings=settings)
    write_history(store, "AAA", DAYS, seed=1)
    write_history(store, "BBB", DAYS[10:], seed=2)
    run_resample(settings, ResampleParams(intervals="3,5")).raise_for_status()
    return root, settings


def _settings_dir(tmp_path):
    """JupyterLab's user settings: autosave every 2 s (its default is 120 s)."""
    folder = tmp_path / "lab-settings" / "@jupyterlab" / "docmanager-extension"
    folder.mkdir(parents=True)
    (folder / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": True, "autosaveInterval": 2}))
    return tmp_path / "lab-settings"


def _explore_in_the_browser(url: str, token: str, root) -> nbformat.NotebookNode:
    """Open 06_explore, put EXPLORED in its parameters cell, run all cells; then wait (the page open) until
    autosave wrote the explored notebook, and return what it wrote."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab/tree/06_explore.ipynb?token={token}")
            params = page.locator(".jp-NotebookPanel .jp-CodeCell").first
            params.locator(".cm-content").click()
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']")
            page.keyboard.press("Control+a")
            page.keyboard.insert_text(EXPLORED)
            page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
            page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]"
                ".every(p => /\\[\\d+\\]/.test(p.textContent))",
                timeout=120_000,
            )
            return _wait_for_the_save(page, root)
        finally:
            browser.close()


def _wait_for_the_save(page, root, autosave: float = 10, timeout: float = 120) -> nbformat.NotebookNode:
    """Wait (the page open) until JupyterLab wrote the explored notebook, and return what it wrote. Autosave
    (every 2 s) normally writes it within seconds; a dialog JupyterLab opens on the way (the file changed on
    disk, seen on a loaded machine) is accepted as a researcher would. A loaded machine also stretches
    autosave's interval (ten times a slow save's duration), so after ``autosave`` seconds without a write the
    notebook is saved by hand (Ctrl+S): what is tested is where it lands, not the timer."""
    start = time.monotonic()
    saved_by_hand = False
    while (explored := _saved_explored(root)) is None:
        waited = time.monotonic() - start
        assert waited < timeout, "JupyterLab never wrote the explored notebook"
        dialog = page.locator(".jp-Dialog .jp-mod-accept")
        if dialog.count():
            dialog.first.click()
        elif waited > autosave and not saved_by_hand:
            page.locator(".jp-NotebookPanel .jp-Notebook").first.click()
            page.keyboard.press("Control+s")
            saved_by_hand = True
        page.wait_for_timeout(250)
    return explored


def _saved_explored(root) -> nbformat.NotebookNode | None:
    """The explored 06_explore as saved, wherever JupyterLab saved it (the working copy, or a source)."""
    for path in (root / "lab" / "06_explore.ipynb", root / "notebooks" / "06_explore.ipynb"):
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if code[0].source.strip() == EXPLORED.strip() and all(c.execution_count is not None for c in code):
            return nb
    return None


def test_exploring_06_in_jupyterlab_changes_neither_the_sources_nor_the_next_run(tmp_path):
    root, settings = _project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "POLYGON_"))}
    env.update(
        CONDVEST_LAKE_URI=settings.lake_uri,
        CONDVEST_RUNS_URI=settings.runs_uri,
        CONDVEST_HOME=str(settings.home),
        JUPYTERLAB_SETTINGS_DIR=str(_settings_dir(tmp_path)),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
    )
    with lab_server(root, env, tmp_path / "lab.log") as srv:
        explored = _explore_in_the_browser(srv.url, srv.token, root)
    errors = [o for c in explored.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert "BBB: 3-session bars, with volume" in json.dumps(explored), "the explored run drew BBB's 3-session bars"

    assert _git(root, "status", "--porcelain") == "", "the tracked notebooks are unchanged, lab/ is ignored"
    result = run_notebook(
        "06_explore",
        settings=settings,
        options=RunOptions(runs_uri=str(tmp_path / "runs"), root=root, progress_bar=False),
    )
    assert result.ok, result.summary()
    page = (tmp_path / "runs" / result.html_key).read_text()
    assert "AAA: 5-session bars, with volume" in page, "the documented defaults: the first symbol, interval 5"
    assert "BBB: 3-session bars" not in page
