"""The issue's "done when": after ``make demo``, ``make lab``'s services and JupyterLab's server, each notebook
executed through the server's kernel API from ``lab/`` (the working copy of ``notebooks/``) sees the demo's
lake, the lab's market serves the demo's split symbols on the lake's price basis, and no PostgreSQL process is
left afterwards."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from condvest.explore import ExploreParams, open_lake
from condvest.monitoring import MonitoringParams, collect
from condvest.offline.lab import lab_services
from condvest.offline.world import load_world
from condvest.postgres import EmbeddedCluster
from condvest.resample import checkpoint_table
from condvest.settings import Settings
from runner.render import plotly_file
from tests.fixtures.browser import CHROMIUM, charts_drawn, external_scripts
from tests.fixtures.lab import errors, lab_server, last_text, run_notebooks_in_lab
from tests.fixtures.paths import ROOT
from tests.runner.test_pages import pages_tell_the_truth

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SYMBOLS = 4


def _postgres_pids(data_dir) -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if str(data_dir) in line and "postgres" in line}


def test_notebooks_in_jupyterlab_see_the_demo_world(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o755)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "pyproject.toml").write_text("[project]\nname = 'demo-copy'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "POLYGON_"))}
    demo = subprocess.run(
        [sys.executable, "-m", "condvest.offline.demo", "--symbols", str(SYMBOLS), "--root", str(root)],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    cluster = EmbeddedCluster(root / ".condvest")
    with ThreadPoolExecutor(1) as pool:  # the pages (a browser) while the lab session waits on its kernels
        pages = pool.submit(_every_page_draws_offline, root / "runs")
        try:
            _lab_session(root, env, cluster, tmp_path)
        finally:
            cluster.destroy()
        pages.result()


def _every_page_draws_offline(runs):
    """Every page of the demo's runs opens offline with all its charts drawn; a run folder stays small."""
    pages = sorted(p for p in runs.rglob("*.html") if p.name != "index.html")  # not the run store's lists
    assert len(pages) == 9  # 04 adopt, 03, 01 backfill, daily (01, 02), 04 deploy, weekly (04 archive, 04 sync), 05
    pages_tell_the_truth(runs)  # no frozen progress bar, widget repr or reference note; 05 lists the runs
    expected = {}
    for page in pages:
        text = page.read_text()
        assert not external_scripts(text), page.name
        expected[page] = text.count("Plotly.newPlot(")
    assert sum(n > 0 for n in expected.values()) == 6, "02, the four 04 and 05 chart; 01 and 03 are tables"
    if CHROMIUM is not None:  # one browser for the pages with charts (a page without has nothing to draw)
        charted = {page: n for page, n in expected.items() if n > 0}
        assert charts_drawn(charted.items()) == charted, "charts not drawn"
    for folder in (p for p in runs.iterdir() if p.is_dir()):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name != plotly_file())
        assert size < 1_000_000, f"{folder.name}: {size} bytes besides the shared plotly.js"


def _market_continues_the_lake(root, lab_env):
    """The demo's split symbols: the lab's market serves their latest session as bronze holds it (one basis)."""
    world = load_world(root / ".condvest")
    assert world is not None and len(world.splits) == 2, "the demo recorded its market, with its two splits"
    base, key = lab_env["POLYGON_BASE_URL"], lab_env["POLYGON_API_KEY"]
    with open_lake(Settings.from_env({}, root=root), ExploreParams(interval=1)) as lake:
        for split in world.splits:
            stored = lake.sql("SELECT date, close FROM daily WHERE symbol = $s ORDER BY date", {"s": split.symbol})
            last = stored["date"].iloc[-1].date()
            url = f"{base}/v2/aggs/ticker/{split.symbol}/range/1/day/{last}/{last}?adjusted=true&apiKey={key}"
            with urllib.request.urlopen(url, timeout=30) as r:
                (bar,) = json.loads(r.read())["results"]
            assert bar["c"] == pytest.approx(stored["close"].iloc[-1]), f"{split.symbol} {last}: another basis"
            assert 0.7 < bar["c"] / stored["close"].iloc[-2] < 1.4, f"{split.symbol}: not continuous at {last}"


def _lab_session(root, env, cluster, tmp_path):
    assert not cluster.running()
    settings = Settings.from_env({}, root=root)
    expected_checkpoints = checkpoint_table(settings).to_json()
    expected_coverage = collect(settings, MonitoringParams(read_postgres=False)).coverage.to_json()

    with (
        lab_services(root, n_symbols=SYMBOLS, env=env) as lab_env,
        lab_server(root, lab_env, tmp_path / "lab.log") as srv,
    ):
        data_dir = cluster.data
        _market_continues_the_lake(root, lab_env)
        assert _postgres_pids(data_dir), "make lab started the embedded PostgreSQL"
        probes = {}
        for name in sorted(p.name for p in (root / "notebooks").glob("0*.ipynb")):
            probes[name] = ["import os; (os.getcwd(), str(settings.lake_uri))"]
            if name.startswith("02"):
                probes[name] = ["checkpoint_table(settings).to_json()"]
            elif name.startswith("05"):
                probes[name] = ["snapshot.coverage.to_json()"]
        writers = [{name: probe} for name, probe in probes.items() if name[:2] in ("01", "02", "03", "04")]
        readers = {name: probe for name, probe in probes.items() if name[:2] not in ("01", "02", "03", "04")}
        assert sorted(readers) == ["05_monitoring.ipynb", "06_explore.ipynb"]  # they write nothing: run together
        seen = {}
        for name, outputs in run_notebooks_in_lab(srv, root, [*writers, readers]).items():
            assert not errors(outputs), (name, errors(outputs))
            seen[name] = ast.literal_eval(last_text(outputs))
    assert seen["01_fetch.ipynb"] == (str(root / "lab"), str(root / "lake")), "kernels run in the working copy lab/"
    assert seen["02_resample.ipynb"] == expected_checkpoints
    assert seen["05_monitoring.ipynb"] == expected_coverage
    assert not cluster.running() and not _postgres_pids(data_dir), "no PostgreSQL process is left"
