"""RELIABILITY.md row 22: every notebook, run through the runner with a bad parameter, exits non-zero, names the
parameter and writes nothing (no lake object, no Postgres table); the executed notebook is the only trace."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # runs notebooks

BAD = [
    ("01_fetch", "date", "2025-02-30"),
    ("02_resample", "symbol", "../etc"),  # the chart's symbol: checked before compaction writes
    ("03_migrate", "source_prefix", "../outside"),
    ("04_retention", "retention", "0 days"),
    ("05_monitoring", "recent_sessions", "0"),
]


@pytest.mark.parametrize(("notebook", "name", "value"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_parameter_fails_the_run_before_any_write(tmp_path, pg_dsn, polygon_server, notebook, name, value):
    lake, runs = tmp_path / "lake", tmp_path / "runs"
    env = {
        **os.environ,
        "CONDVEST_LAKE_URI": str(lake),
        "CONDVEST_RUNS_URI": str(runs),
        "CONDVEST_PG_DSN": pg_dsn.reveal(),
        "CONDVEST_AS_OF": "2025-10-17",
        "POLYGON_BASE_URL": polygon_server.base_url,
        "POLYGON_API_KEY": polygon_server.api_key,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", notebook, "-p", name, value, "--no-progress", "--timeout", "120"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode != 0, proc.stderr
    assert "ParameterError" in proc.stderr and f"parameter {name}" in proc.stderr, proc.stderr
    assert not lake.exists(), f"the lake was written: {sorted(lake.rglob('*'))}"
    with psycopg.connect(pg_dsn.reveal()) as c:
        tables = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert tables == [], f"tables were created: {tables}"
    assert [r.endpoint for r in polygon_server.requests] == []
    assert list(runs.glob(f"*/{notebook}.ipynb")), "the executed notebook is the run log"
