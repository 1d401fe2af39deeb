"""04_retention on a real PostgreSQL: deploy, dry run, archive, the cutoff rule, views (faults 25, 26).

Races and lock faults (6, 7, 8, 24) are in test_races.py; the shared helpers and fixtures are in
tests/fixtures/retention.py.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from condvest import retention
from condvest.errors import DatabaseError, ParameterError
from condvest.postgres import _pg_bindir
from condvest.settings import Retention, Settings
from tests.fixtures.paths import ROOT
from tests.fixtures.retention import (
    AS_OF,
    SYMBOLS,
    assert_conserved,
    bars,
    connect,
    load,
    log_rows,
    state,
)

_OLD_001 = """
CREATE TABLE raw_ohlcv (
    symbol text NOT NULL, "timestamp" timestamptz NOT NULL, open double precision NOT NULL,
    high double precision NOT NULL, low double precision NOT NULL, close double precision NOT NULL,
    volume double precision NOT NULL, "interval" text NOT NULL DEFAULT '1d', vwap double precision,
    transactions bigint, CONSTRAINT raw_ohlcv_pkey PRIMARY KEY (symbol, "timestamp"));
"""


# ---------------------------------------------------------------------------------------------- helpers


def psql_path() -> str:
    return shutil.which("psql") or str(Path(os.path.realpath(_pg_bindir() / "pg_ctl")).parent / "psql")


def nyd(ts) -> dt.date:
    return pd.Timestamp(ts).tz_convert("America/New_York").date()


# ------------------------------------------------------------------------------------------------ cutoff


def test_sql_cutoff_matches_python_every_day(pg_dsn):
    with connect(pg_dsn) as conn:
        retention.deploy(conn, as_of=AS_OF)
        for r in (Retention(), Retention(1, 1), Retention(0, 1), Retention(2, 0), Retention(0, 37), Retention(4, 0)):
            rows = conn.execute(
                "SELECT d::date, retention_cutoff(%s::interval, d::date) FROM generate_series("
                "'2019-01-01'::date, '2032-12-31'::date, '1 day') d",
                (r.as_interval(),),
            ).fetchall()
            assert len(rows) > 5000
            bad = [(d, got) for d, got in rows if got != retention.cutoff(r, d)]
            assert bad == [], (r, bad[:5])
    assert retention.retention_cutoff(Settings(), dt.date(2024, 3, 31)) == dt.date(2021, 2, 28)
    assert retention.cutoff(Retention(1, 1), dt.date(2025, 3, 29)) == dt.date(2024, 2, 29)


@pytest.mark.parametrize(
    ("as_of", "window", "first_kept"),
    [
        (dt.date(2025, 3, 29), "1 year 1 month", dt.date(2024, 2, 29)),  # lands on Feb 29
        (dt.date(2028, 2, 29), "1 year", dt.date(2027, 2, 28)),  # from Feb 29, clipped
        (dt.date(2024, 3, 31), "3 years 1 month", dt.date(2021, 2, 28)),  # month end clipped
    ],
)
def test_cutoff_boundary_and_rerun_archives_nothing(pg_dsn, as_of, window, first_kept):
    """Fault 25: the bar dated on the cutoff stays, the day before moves; a re-run archives 0 rows."""
    days = [
        first_kept - dt.timedelta(days=2),
        first_kept - dt.timedelta(days=1),
        first_kept,
        first_kept + dt.timedelta(days=1),
    ]
    df = pd.DataFrame(
        {
            "symbol": "FEB",
            "timestamp": pd.DatetimeIndex(days).tz_localize("America/New_York"),
            "open": 1.0,
            "high": 1.0,
            "low": 1.0,
            "close": 1.0,
            "volume": 0.5,
        }
    )
    with connect(pg_dsn) as conn:
        retention.deploy(conn, as_of=as_of)
        load(conn, df)
        before = state(conn)
        assert retention.dry_run(conn, retention.cutoff(Retention.parse(window), as_of)).at[0, "rows_to_archive"] == 2
        first = retention.archive(conn, window, as_of=as_of)
        assert (first.status, first.cutoff, first.archived, first.deleted) == ("success", first_kept, 2, 2)
        kept = sorted(nyd(r[0]) for r in conn.execute('SELECT "timestamp" FROM raw_ohlcv'))
        assert kept == days[2:]
        again = retention.archive(conn, window, as_of=as_of)
        assert (again.status, again.archived, again.deleted) == ("success", 0, 0)
        assert_conserved(before, state(conn))


# ------------------------------------------------------------------------------------------- deploy


def test_deploy_fresh_then_redeploy_keeps_data(pg_dsn):
    with connect(pg_dsn) as conn:
        first = retention.deploy(conn, as_of=AS_OF)
        assert first.files == retention.POLICY_FILES
        assert first.raw_ohlcv_partitioned and first.archive_partitioned
        assert not first.timescaledb and not first.pg_cron  # absent here: detected, not a failure
        assert first.partitions_created > 0
        load(conn, bars())
        before = state(conn)
        again = retention.deploy(conn, as_of=AS_OF)
        assert again.partitions_created == 0
        assert state(conn) == before
        assert retention.is_deployed(conn)
        # the fetch stage's upsert still works on the partitioned table
        conn.execute("""INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)
                        VALUES ('AAA', '2024-12-31 00:00 America/New_York', 2, 2, 2, 2, 7)
                        ON CONFLICT (symbol, "timestamp") DO UPDATE SET volume = EXCLUDED.volume""")
        assert state(conn)["total"] == before["total"]
        assert retention.deploy(conn, as_of=AS_OF).to_frame().loc["TimescaleDB", "value"] == "False"


def test_rows_outside_partitions_move_into_new_partitions(pg_dsn):
    """Rows inserted before their month's partition existed (DEFAULT partition) stay in raw_ohlcv."""
    with connect(pg_dsn) as conn:
        retention.deploy(conn, as_of=AS_OF)
        load(conn, bars(first=dt.date(2025, 6, 2), last=dt.date(2025, 7, 31)))
        before = state(conn)
        assert retention.ensure_partitions(conn, dt.date(2025, 6, 1), dt.date(2025, 8, 1)) == 2
        where = dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM raw_ohlcv GROUP BY 1").fetchall())
        assert set(where) == {"raw_ohlcv_p202506", "raw_ohlcv_p202507"}
        assert state(conn) == before


def test_redeploy_over_an_unpartitioned_raw_ohlcv(pg_dsn):
    """An older deployment's plain raw_ohlcv keeps working: rows are archived row by row."""
    with connect(pg_dsn) as conn:
        conn.execute(_OLD_001)
        load(conn, bars())
        loaded = conn.execute("SELECT count(*) FROM raw_ohlcv").fetchone()[0]
        report = retention.deploy(conn, as_of=AS_OF)
        assert not report.raw_ohlcv_partitioned and not report.archive_partitioned
        assert report.partitions_created == 0
        before = state(conn)
        assert before["total"] == loaded
        result = retention.archive(conn, as_of=AS_OF)
        assert result.status == "success" and result.partitions_moved == 0 and result.archived > 0
        assert_conserved(before, state(conn))
        retention.deploy(conn, as_of=AS_OF)  # and again
        assert retention.archive(conn, as_of=AS_OF).archived == 0


# ------------------------------------------------------------------------------------------ dry run


def test_dry_run_reports_and_changes_nothing(deployed):
    with connect(deployed) as conn:
        before, logged = state(conn), log_rows(conn)
        cut = retention.cutoff(Retention(), AS_OF)
        df = retention.dry_run(conn, cut)
        assert state(conn) == before and log_rows(conn) == logged
        expected = bars()
        old = expected[expected["timestamp"].dt.date < cut]
        row = df.iloc[0]
        assert row["rows_to_archive"] == len(old)
        assert row["oldest"] == old["timestamp"].min().date() and row["newest"] == old["timestamp"].max().date()
        assert row["symbols"] == len(SYMBOLS)
        assert row["rows_in_raw_ohlcv"] == len(expected)


# ------------------------------------------------------------------------------------------- archive


@pytest.mark.parametrize("method", ["auto", "rows"])
def test_archive_moves_exactly_the_old_rows(deployed_monthly, method):
    cut = retention.cutoff(Retention(), AS_OF)
    with connect(deployed_monthly) as conn:
        before = state(conn)
        expected = retention.dry_run(conn, cut).at[0, "rows_to_archive"]
        result = retention.archive(conn, as_of=AS_OF, method=method)
        assert (result.status, result.cutoff, result.archived, result.deleted) == ("success", cut, expected, expected)
        assert (result.partitions_moved > 0) == (method == "auto")
        after = state(conn)
        assert_conserved(before, after)
        assert after["archive"] == expected
        newest_archived = conn.execute('SELECT max("timestamp") FROM raw_ohlcv_archive').fetchone()[0]
        oldest_hot = conn.execute('SELECT min("timestamp") FROM raw_ohlcv').fetchone()[0]
        assert nyd(newest_archived) < cut <= nyd(oldest_hot)
        assert conn.execute("SELECT count(*) FROM raw_ohlcv_archive WHERE archived_at IS NULL").fetchone()[0] == 0
        # the next month: the cutoff's month has become whole and moves too; the earlier rows join it
        later = retention.archive(conn, as_of=dt.date(2025, 2, 20), method=method)
        assert later.status == "success" and later.archived > 0
        assert_conserved(before, state(conn))
        log = retention.retention_log(conn)
        assert list(log["consistency"]) == ["consistent", "consistent"]


def test_procedure_runs_from_psql_with_its_defaults(deployed):
    psql = psql_path()
    env = {**os.environ, "PGOPTIONS": "-c client_min_messages=warning"}
    out = subprocess.run(
        [
            psql,
            deployed.reveal(),
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            "CALL archive_old_ohlcv_data('3 years 1 month', '2025-01-15')",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    with connect(deployed) as conn:
        status, n, m = conn.execute(
            "SELECT status, records_archived, records_deleted FROM data_retention_log ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert status == "success" and n == m > 0
        # no arguments at all: today's date in New York, 3 years 1 month
        subprocess.run(
            [psql, deployed.reveal(), "-v", "ON_ERROR_STOP=1", "-Atc", "CALL archive_old_ohlcv_data()"],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert conn.execute("SELECT status FROM data_retention_log ORDER BY id DESC LIMIT 1").fetchone()[0] == "success"


def test_bad_parameters_are_refused_before_any_write(deployed):
    settings = Settings(as_of=AS_OF)
    with pytest.raises(ParameterError, match="mode"):
        retention.plan(settings, retention.RetentionParams(mode="purge"))
    with pytest.raises(ParameterError, match="retention"):
        retention.plan(settings, retention.RetentionParams(retention="0 months"))
    with pytest.raises(ParameterError, match="retention"):
        retention.plan(settings, retention.RetentionParams(retention="1 month'; DROP TABLE raw_ohlcv; --"))
    with pytest.raises(ParameterError, match="as_of"):
        retention.plan(settings, retention.RetentionParams(as_of="2025-02-30"))
    with pytest.raises(ParameterError, match="lock_timeout"):
        retention.plan(settings, retention.RetentionParams(lock_timeout="5s'; SELECT 1"))
    ok = retention.plan(settings, retention.RetentionParams(mode="dry-run", retention="37 months"))
    assert (ok.as_of, ok.cutoff) == (AS_OF, dt.date(2021, 12, 15))
    with connect(deployed) as conn:
        before = state(conn)
        for bad in ("0 days", "-1 month"):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute("CALL archive_old_ohlcv_data(%s::interval, '2025-01-15')", (bad,))
        assert state(conn) == before and log_rows(conn) == []


def test_views_and_figures(deployed):
    with connect(deployed) as conn:
        empty = retention.read_views(conn)
        assert empty.log.empty and int(empty.statistics.at[0, "total_records"]) == 0
        retention.retention_log_figure(empty.log)
        retention.archive(conn, as_of=AS_OF)
        views = retention.read_views(conn)
    d = views.distribution
    assert {"month", "hot_records", "archived_records", "total_records"} <= set(d.columns)
    assert int(d["total_records"].sum()) == len(bars())
    assert int(views.statistics.at[0, "total_records"]) == int(d["archived_records"].sum())
    assert views.log.at[0, "consistency"] == "consistent"
    assert len(retention.distribution_figure(d).data) == 2
    assert views.log.at[0, "retention"] == "3 years 1 month", "the window as the plan says it, not 1125 days"
    fig = retention.retention_log_figure(views.log)
    assert len(fig.data) == 1 and fig.layout.xaxis.type == "category"
    assert list(fig.data[0].x) == [f"#{views.log.at[0, 'run_id']} {views.log.at[0, 'started_at']:%Y-%m-%d %H:%M}"]


def test_execute_modes(pg_dsn):
    settings = Settings(as_of=AS_OF)
    with connect(pg_dsn) as conn:
        # archive on a database without the policy deploys it first
        out = retention.execute(conn, retention.plan(settings, retention.RetentionParams(mode="archive")))
        assert out.archive.status == "success" and out.archive.archived == 0
        assert out.summary()["status"] == "success" and out.summary()["cutoff"] == "2021-12-15"
        load(conn, bars())
        out = retention.execute(conn, retention.plan(settings, retention.RetentionParams(mode="dry-run")))
        assert out.to_frame().at[0, "rows_to_archive"] > 0 and out.summary()["rows_to_archive"] > 0
        out = retention.execute(conn, retention.plan(settings, retention.RetentionParams(mode="deploy")))
        assert out.deploy.files == retention.POLICY_FILES
        assert out.summary() == {
            "mode": "deploy",
            "files": 5,
            "partitioned": True,
            "timescaledb": False,
            "pg_cron": False,
        }


# ------------------------------------------------------------------------------------ fault 26 (backfill)


def test_backfilled_old_bar_is_never_in_both_tables(deployed):
    """Fault 26: a backfill upserts a bar older than the cutoff. The fetch side refuses it; a direct
    upsert of an archived key takes the bar out of the archive in the same statement, and the next run
    archives the new values."""
    from condvest import pg_cache

    cut = retention.cutoff(Retention(), AS_OF)
    with connect(deployed) as conn:
        retention.archive(conn, as_of=AS_OF)
        before = state(conn)
        old_day = dt.date(2021, 3, 1)
        frame = pd.DataFrame(
            {
                "symbol": ["AAA"],
                "date": [old_day],
                "open": [9.0],
                "high": [9.0],
                "low": [9.0],
                "close": [9.0],
                "volume": [9.0],
                "interval": ["1d"],
                "vwap": [None],
                "transactions": [None],
            }
        )
        assert pg_cache.upsert_bars(conn, frame, cut) == 0
        assert state(conn) == before
        upsert = """INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)
                    VALUES ('AAA', '2021-03-01 00:00 America/New_York', 9, 9, 9, 9, 9)
                    ON CONFLICT (symbol, "timestamp") DO UPDATE
                    SET open = 9, high = 9, low = 9, close = 9, volume = 9"""
        conn.execute(upsert)
        after = state(conn)
        assert after["in_both"] == 0 and after["total"] == before["total"]
        assert after["hot"] == before["hot"] + 1
        rerun = retention.archive(conn, as_of=AS_OF)
        assert rerun.archived == 1
        final = state(conn)
        assert final["in_both"] == 0 and final["total"] == before["total"]
        assert (
            conn.execute("""SELECT volume FROM raw_ohlcv_archive WHERE symbol = 'AAA'
                               AND "timestamp" = '2021-03-01 00:00 America/New_York'""").fetchone()[0]
            == 9
        )
        conn.execute(upsert)  # the same upsert inside a transaction that rolls back leaves the archive alone
        retention.archive(conn, as_of=AS_OF)
        with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
            conn.execute(upsert)
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'abort'; END $$")
        assert state(conn)["in_both"] == 0 and state(conn)["total"] == before["total"]


def test_archive_refuses_a_connection_inside_a_transaction(deployed):
    with connect(deployed, autocommit=False) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(DatabaseError, match="outside a transaction"):
            retention.archive(conn, as_of=AS_OF)
        conn.rollback()
        assert retention.archive(conn, as_of=AS_OF).status == "success"
        assert conn.autocommit is False


# ------------------------------------------------------------------------------------------ shell script


def test_deploy_script_local_dry_run_and_rds_without_settings(pg_dsn):
    script = str(ROOT / "sql" / "deploy_retention_policy.sh")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "CONDVEST_"))}
    env.update(CONDVEST_PG_DSN=pg_dsn.reveal(), PYTHON=sys.executable)
    password = pg_dsn.reveal().split(":")[2].split("@")[0]
    for mode in ("local", "dry-run"):
        out = subprocess.run(
            [script, mode, "--as-of", "2025-01-15"], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert password not in out.stdout + out.stderr
        assert "2021-12-15" in out.stdout  # the cutoff
    assert "rows_to_archive" in out.stdout
    rds = subprocess.run([script, "rds"], capture_output=True, text=True, env=env, timeout=120)
    assert rds.returncode == 1 and "RDS_" in rds.stderr and password not in rds.stdout + rds.stderr
    assert subprocess.run([script, "purge"], capture_output=True, env=env, timeout=60).returncode == 2
