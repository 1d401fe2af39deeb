"""RELIABILITY.md row 11: all five notebooks run through the runner in an offline world whose API key and database
password are sentinels; neither appears anywhere in the runs folder (notebooks, html pages, index) or in the
runner's output."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from urllib.parse import urlsplit

import psycopg
import pytest

from condvest.offline.sandbox import offline_world
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # runs notebooks


@pytest.fixture
def sentinel_dsn(pg_cluster):
    """A database owned by a role whose password is a sentinel (dropped afterwards)."""
    admin = pg_cluster.dsn("postgres").reveal()
    name, password = "scan_" + secrets.token_hex(4), "SENTINEL-db-pw-" + secrets.token_hex(6)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}'")
        c.execute(f"CREATE DATABASE {name} OWNER {name}")
    u = urlsplit(admin)
    yield f"postgresql://{name}:{password}@{u.hostname}:{u.port}/{name}", password
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"DROP ROLE IF EXISTS {name}")


def test_no_notebook_run_leaves_the_api_key_or_the_database_password_behind(tmp_path, sentinel_dsn):
    dsn, password = sentinel_dsn
    world = offline_world(
        tmp_path / "world", n_symbols=4, dms_start=dt.date(2025, 6, 2), dms_end=dt.date(2025, 9, 30), pg_dsn=dsn
    )
    with world as env:
        key = env["POLYGON_API_KEY"]
        outputs = []
        for args in (
            ["run", "03_migrate"],
            ["pipeline", "daily", "-p", "max_backfill_days", "5"],
            ["run", "04_retention"],
            ["run", "05_monitoring"],
        ):
            r = subprocess.run(
                [sys.executable, "-m", "runner", *args, "--no-progress", "--log-output"],
                # no chart PNGs: a PNG's bytes are compressed pixels, a key drawn in a chart would never show in
                # them, so scanning them could not fail; each run would start a browser for them
                env={**os.environ, **env, "CONDVEST_CHART_PNG": "0"},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert r.returncode == 0, r.stderr[-3000:]
            outputs += [r.stdout, r.stderr]
    runs = tmp_path / "world" / "runs"
    files = [p for p in runs.rglob("*") if p.is_file()]
    ran = {p.stem for p in files if p.suffix == ".ipynb"}
    assert ran == {"01_fetch", "02_resample", "03_migrate", "04_retention", "05_monitoring"}
    # every file as bytes: pages, notebooks, the index and whatever else a run writes
    texts = [*((f"output {i}", t.encode()) for i, t in enumerate(outputs)), *((p.name, p.read_bytes()) for p in files)]
    for name, data in texts:
        assert key.encode() not in data, f"the API key is in {name}"
        assert password.encode() not in data, f"the database password is in {name}"
