"""A run log page opens offline in headless Chromium and its charts are drawn; a run prints no kernel
transport warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from runner.render import plotly_file
from tests.fixtures.browser import CHROMIUM, drawn_charts, dump_dom
from tests.fixtures.paths import TEST_DATA

pytestmark = pytest.mark.slow


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (tools/ensure-system.sh installs it as root)")
def test_run_page_renders_offline_with_its_chart(tmp_path):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    shutil.copy(TEST_DATA / "notebooks" / "ok.ipynb", project / "notebooks")
    env = {**os.environ, "CONDVEST_RUNS_URI": str(project / "runs")}
    r = subprocess.run(
        [sys.executable, "-m", "runner", "run", "ok", "--no-progress"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr, "the kernel talks in plain text over TCP"
    page = next((project / "runs").glob("*/ok.html"))
    assert sum(f.stat().st_size for f in page.parent.iterdir() if f.name != plotly_file()) < 1_000_000
    dom = dump_dom(page, tmp_path / "profile")
    assert "<title>ok · " in dom
    assert drawn_charts(dom) == 1 and 'class="main-svg"' in dom
    # without the shared plotly.js next to it, the same page draws nothing: the check above can fail
    (page.parent / plotly_file()).unlink()
    assert drawn_charts(dump_dom(page, tmp_path / "profile")) == 0
