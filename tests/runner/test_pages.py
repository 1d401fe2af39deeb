"""A run log page opens offline in headless Chromium and its charts are drawn, with the one plotly.js the runs
store shares (``runs/static/``); a run folder bundled on its own (``python -m runner bundle``) still draws;
``runs/index.html`` lists the runs; a run prints no kernel transport warning.

``pages_tell_the_truth`` is also applied to the pages of a finished demo (tests/offline/test_lab_end_to_end.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.render import plotly_file
from tests.fixtures.browser import CHROMIUM, drawn_charts, dump_dom
from tests.fixtures.paths import TEST_DATA

pytestmark = pytest.mark.slow

#: what a page of a finished run must not show: a progress bar frozen at its first frame, a widget's repr, the
#: source notebook's note about its stored reference outputs
UNTRUE = ("0%|", "FloatProgress(", "not your lake")


def pages_tell_the_truth(runs: Path) -> None:
    """Every page under ``runs`` is free of ``UNTRUE``; ``runs/index.html`` links every page; 05_monitoring's
    latest page lists the runs before it (their run ids)."""
    pages = sorted(p for p in runs.rglob("*.html") if p.name != "index.html")
    for page in pages:
        text = page.read_text()
        assert not [u for u in UNTRUE if u in text], (page.name, [u for u in UNTRUE if u in text])
    listed = set(re.findall(r'<a href="([^"]+\.html)"', (runs / "index.html").read_text()))
    assert {p.relative_to(runs).as_posix() for p in pages} <= listed, "runs/index.html links every page"
    monitoring = sorted(runs.rglob("05_monitoring.html"))
    if monitoring:
        text = monitoring[-1].read_text()
        earlier = [p.parent.name for p in pages if p.parent.name < monitoring[-1].parent.name]
        assert earlier and all(run_id in text for run_id in earlier), "05_monitoring lists the earlier runs"


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONDVEST_RUNS_URI": str(project / "runs")}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (tools/ensure-system.sh installs it as root)")
def test_run_page_renders_offline_with_its_chart(tmp_path):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    shutil.copy(TEST_DATA / "notebooks" / "ok.ipynb", project / "notebooks")
    r = _run(project, "run", "ok", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr, "the kernel talks in plain text over TCP"
    runs = project / "runs"
    page = next(runs.glob("*/ok.html"))
    assert sum(f.stat().st_size for f in page.parent.iterdir()) < 1_000_000, "no plotly.js copy in the run folder"
    assert (runs / "static" / plotly_file()).is_file()
    dom = dump_dom(page, tmp_path / "profile")
    assert "<title>ok · " in dom
    assert drawn_charts(dom) == 1 and 'class="main-svg"' in dom
    pages_tell_the_truth(runs)
    # a second run adds its pages only, and the index lists both, newest first
    assert _run(project, "run", "ok", "--no-progress").returncode == 0
    second = max(runs.glob("*/ok.html"), key=lambda p: p.parent.name)
    assert len(list(runs.rglob("plotly-*.js"))) == 1
    index = (runs / "index.html").read_text()
    assert index.index(second.parent.name) < index.index(page.parent.name)
    # a run folder bundled on its own draws with the copy beside its page
    b = _run(project, "bundle", page.parent.name[:-2], "--out", str(tmp_path / "out"))
    assert b.returncode == 0, b.stderr
    bundled = tmp_path / "out" / page.parent.name / "ok.html"
    assert (bundled.parent / plotly_file()).is_file()
    assert drawn_charts(dump_dom(bundled, tmp_path / "profile")) == 1
    # without the shared plotly.js, the page in the store draws nothing: the checks above can fail
    (runs / "static" / plotly_file()).unlink()
    assert drawn_charts(dump_dom(page, tmp_path / "profile")) == 0
