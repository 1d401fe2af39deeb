"""RELIABILITY.md row 22 and README fault row 45: a bad parameter value is refused before anything is written.

Through the runner, the stage's own check (``XParams.check()``) runs before a run is claimed: exit 2, one line
naming the parameter, what is wrong and the rule, and no run recorded (no run folder, no index record). Run
directly by papermill (as JupyterLab runs it), every notebook still refuses the value itself, before any write
(no lake object, no Postgres table, no request to the market)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from runner.__main__ import main
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # starts kernels (the runner starts one ahead; papermill runs the notebooks)

BAD = [
    ("01_fetch", "date", "2025-02-30"),
    ("02_resample", "symbol", "../etc"),  # the chart's symbol: checked before compaction writes
    ("03_migrate", "source_prefix", "../outside"),
    ("04_retention", "retention", "0 days"),
    ("05_monitoring", "recent_sessions", "0"),
]

#: what the runner refuses, and the words of its one line
REFUSED = [
    ("02_resample", "intervals", "3,x", "positive integers separated by commas"),
    ("01_fetch", "date", "2026-02-30", "invalid date '2026-02-30'"),
    ("06_explore", "symbols", "AAPL,BRK/A", "invalid symbol 'BRK/A': a ticker is 1 to 16 letters"),
]


def test_the_runner_refuses_a_typo_before_a_run_exit_2_and_records_nothing(tmp_path, monkeypatch, capsys, keep_logging):
    runs, lake = tmp_path / "runs", tmp_path / "lake"
    monkeypatch.setenv("CONDVEST_LAKE_URI", str(lake))
    monkeypatch.setenv("CONDVEST_RUNS_URI", str(runs))
    for notebook, name, value, words in REFUSED:
        code = main(["run", notebook, "-p", name, value, "--no-progress", "--cwd", str(ROOT)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (notebook, err)
        assert len(err.splitlines()) == 1 and f"parameter {name}: " in err and words in err, err
    assert not runs.exists(), f"a run was recorded: {sorted(runs.rglob('*'))}"
    assert not lake.exists()
    # a pipeline's stage refuses the same way, naming the stage
    assert main(["pipeline", "daily", "-p", "intervals", "3,x", "--no-progress", "--cwd", str(ROOT)]) == 2
    assert "stage 2 (02_resample.ipynb)" in capsys.readouterr().err and not runs.exists()


@pytest.mark.parametrize(("notebook", "name", "value"), BAD, ids=[b[0] for b in BAD])
def test_a_notebook_run_directly_refuses_a_bad_parameter_before_any_write(
    tmp_path, pg_dsn, polygon_server, notebook, name, value
):
    lake = tmp_path / "lake"
    env = {
        **os.environ,
        "CONDVEST_LAKE_URI": str(lake),
        "CONDVEST_RUNS_URI": str(tmp_path / "runs"),
        "CONDVEST_PG_DSN": pg_dsn.reveal(),
        "CONDVEST_AS_OF": "2025-10-17",
        "POLYGON_BASE_URL": polygon_server.base_url,
        "POLYGON_API_KEY": polygon_server.api_key,
    }
    out = tmp_path / f"{notebook}.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", f"notebooks/{notebook}.ipynb", str(out), "-p", name, value],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode != 0, proc.stderr
    assert "ParameterError" in proc.stderr and f"parameter {name}" in proc.stderr, proc.stderr[-2000:]
    assert not lake.exists(), f"the lake was written: {sorted(lake.rglob('*'))}"
    with psycopg.connect(pg_dsn.reveal()) as c:
        tables = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert tables == [], f"tables were created: {tables}"
    assert [r.endpoint for r in polygon_server.requests] == []
