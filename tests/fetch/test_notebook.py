"""papermill runs 01_fetch through the runner in an offline world: run log, run index, secrets, failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from condvest.offline.sandbox import offline_world
from condvest.runs import read_records
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # runs notebooks


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_cluster):
    root = tmp_path_factory.mktemp("world")
    os.chmod(root, 0o755)
    with offline_world(root, n_symbols=8, dms=False, pg_dsn=pg_cluster.dsn("postgres").reveal()) as env:
        yield root, env


def runner(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "runner", *args, "--no-progress"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_01_fetch_runs_headless_and_leaves_a_clean_run_log(world):
    root, env = world
    r = runner(env, "run", "01_fetch", "-p", "max_backfill_days", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    runs = root / "runs"
    ipynb = sorted(runs.glob("*/01_fetch.ipynb"))
    html = sorted(runs.glob("*/01_fetch.html"))
    assert ipynb and html
    key, dsn = env["POLYGON_API_KEY"], env["CONDVEST_PG_DSN"]
    password = dsn.split(":")[2].split("@")[0]
    for f in [*ipynb, *html, *sorted((runs / "index").glob("*.json"))]:
        text = f.read_text()
        assert key not in text and password not in text, f"secret in {f.name}"
    nb = json.loads(ipynb[-1].read_text())
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert "'bronze_rows': 24" in outputs  # 8 symbols x 3 sessions
    index = read_records(LocalStore(runs))
    assert index[-1]["status"] == "ok" and index[-1]["results"]["bronze_rows"] == 24


def test_a_failed_session_fails_the_run_naming_the_cell(world):
    root, env = world
    # a session that cannot be fetched: the server is asked to fail it for good
    import urllib.request

    fault = {"kind": "http_5xx", "path": "/grouped/", "status": 500}
    req = urllib.request.Request(
        env["POLYGON_BASE_URL"] + "/_control/faults",
        method="PUT",
        data=json.dumps({"faults": [fault]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()
    try:
        fast = {**env, "CONDVEST_HTTP_RETRIES": "1"}  # fail fast: the retry policy has its own tests
        r = runner(fast, "run", "01_fetch", "-p", "date", "2025-10-16", "-p", "force", "True")
    finally:
        req = urllib.request.Request(env["POLYGON_BASE_URL"] + "/_control/faults", method="DELETE")
        urllib.request.urlopen(req).read()
    assert r.returncode == 1
    assert "01_fetch.ipynb failed in cell" in r.stderr and "FetchFailed" in r.stderr and "2025-10-16" in r.stderr
    index = read_records(LocalStore(root / "runs"))
    assert index[-1]["status"] == "failed"
