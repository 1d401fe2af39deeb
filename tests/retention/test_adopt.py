"""04_retention mode="adopt" on a real PostgreSQL loaded with the previous pipeline's DDL (restated below).

Adopt (through sql/deploy_retention_policy.sh adopt), then the daily fetch's upsert and the weekly archive:
no row lost, one row per (symbol, New York session), the old log's runs still in data_retention_log, the
tables the workbench does not use untouched. Duplicates per (symbol, session) stop adoption, named.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from condvest import retention
from condvest.errors import ValidationError
from condvest.monitoring.snapshot import read_retention
from condvest.pg_cache import upsert_bars
from condvest.runs import read_records
from condvest.settings import Retention, Settings
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT
from tests.fixtures.retention import connect

AS_OF = dt.date(2025, 1, 15)  # cutoff 2021-12-15 with 3 years 1 month

# The previous pipeline's schema, as its deploy scripts left it on RDS.
OLD_DDL = """
CREATE TABLE raw_ohlcv (
    symbol      VARCHAR(10)    NOT NULL,
    open        DECIMAL(10, 2),
    high        DECIMAL(10, 2),
    low         DECIMAL(10, 2),
    close       DECIMAL(10, 2),
    volume      BIGINT,
    "timestamp" TIMESTAMP      NOT NULL,
    "interval"  VARCHAR(10)    NOT NULL DEFAULT '1d',
    PRIMARY KEY (symbol, "timestamp", "interval")
);
CREATE INDEX idx_raw_ohlcv_timestamp ON raw_ohlcv ("timestamp");
CREATE TABLE raw_ohlcv_archive (
    symbol      VARCHAR(10)    NOT NULL,
    open        DECIMAL(10, 2),
    high        DECIMAL(10, 2),
    low         DECIMAL(10, 2),
    close       DECIMAL(10, 2),
    volume      BIGINT,
    "timestamp" TIMESTAMP      NOT NULL,
    "interval"  VARCHAR(10)    NOT NULL DEFAULT '1d',
    archived_at TIMESTAMP      DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (symbol, "timestamp", "interval")
);
CREATE TABLE data_retention_log (
    id                     SERIAL PRIMARY KEY,
    execution_date         TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    retention_threshold    TIMESTAMP,
    records_archived       INTEGER DEFAULT 0,
    records_deleted        INTEGER DEFAULT 0,
    status                 VARCHAR(20),
    error_message          TEXT,
    execution_time_seconds DECIMAL(10, 2)
);
CREATE TABLE data_ingestion_watermark (symbol VARCHAR(10) PRIMARY KEY, latest_date DATE, updated_at TIMESTAMP);
CREATE TABLE symbol_metadata (symbol VARCHAR(10) PRIMARY KEY, name TEXT, exchange VARCHAR(20));
CREATE TABLE batch_jobs (job_id SERIAL PRIMARY KEY, job_name TEXT, status VARCHAR(20), created_at TIMESTAMP);
CREATE OR REPLACE FUNCTION archive_old_ohlcv_data() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO raw_ohlcv_archive SELECT *, now() FROM raw_ohlcv WHERE "timestamp" < now() - interval '37 months';
END
$$;
CREATE VIEW v_retention_log_summary AS SELECT * FROM data_retention_log ORDER BY execution_date DESC LIMIT 20;
INSERT INTO data_ingestion_watermark VALUES ('AAA', '2025-01-14', '2025-01-14 12:00');
INSERT INTO symbol_metadata VALUES ('AAA', 'Triple A', 'XNYS'), ('BBB', 'Double B', 'XNAS');
INSERT INTO batch_jobs (job_name, status, created_at) VALUES ('resample', 'SUCCEEDED', '2025-01-10 03:00');
INSERT INTO data_retention_log (execution_date, retention_threshold, records_archived, records_deleted, status,
                                error_message, execution_time_seconds)
VALUES ('2024-11-03 02:00', '2021-10-03 02:00', 0, 0, 'failed', 'invalid RAISE level', 0.12),
       ('2024-11-10 02:00', '2021-10-10 02:00', 12, 12, 'success', NULL, 1.50);
"""


def _old_rows(symbols=("AAA", "BBB"), first="2021-09-01", last="2025-01-14", seed=3) -> pd.DataFrame:
    """Bars as the old fetcher stored them: 2-decimal prices, integer volume, naive UTC of New York midnight."""
    days = pd.bdate_range(first, last)
    rng = np.random.default_rng(seed)
    n = len(days) * len(symbols)
    close = rng.uniform(1, 300, n).round(2)
    stamps = days.tz_localize("America/New_York").tz_convert("UTC").tz_localize(None)
    return pd.DataFrame(
        {
            "symbol": np.repeat(symbols, len(days)),
            "open": close,
            "high": (close * 1.02).round(2),
            "low": (close * 0.98).round(2),
            "close": close,
            "volume": rng.integers(0, 10**9, n),
            "timestamp": np.tile(stamps, len(symbols)),
        }
    )


def _load(conn, table: str, df: pd.DataFrame) -> None:
    cols = ["symbol", "open", "high", "low", "close", "volume", "timestamp"]
    with conn.cursor().copy(f'COPY {table} (symbol, open, high, low, close, volume, "timestamp") FROM STDIN') as cp:
        for rec in df[cols].itertuples(index=False):
            cp.write_row([rec[0], *map(str, rec[1:5]), int(rec[5]), rec[6].to_pydatetime()])


@pytest.fixture
def old_db(pg_dsn):
    """A database as the previous pipeline left it: old DDL, bars in raw_ohlcv, older bars in the archive."""
    with connect(pg_dsn) as conn:
        conn.execute(OLD_DDL)
        _load(conn, "raw_ohlcv", _old_rows())
        _load(conn, "raw_ohlcv_archive", _old_rows(("AAA",), "2020-06-01", "2021-08-31", seed=4))
    return pg_dsn


def _keys(conn) -> pd.DataFrame:
    q = """SELECT symbol, ("timestamp" AT TIME ZONE 'America/New_York')::date AS day, close, volume, 'hot' AS t
             FROM raw_ohlcv
           UNION ALL
           SELECT symbol, ("timestamp" AT TIME ZONE 'America/New_York')::date, close, volume, 'archive'
             FROM raw_ohlcv_archive"""
    return pd.DataFrame(conn.execute(q).fetchall(), columns=["symbol", "day", "close", "volume", "table"])


def _types(conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
    ).fetchall()
    return dict(rows)


def test_dry_run_shows_the_adoption_and_changes_nothing(old_db):
    with connect(old_db) as conn:
        # a bar stamped 16:00 New York (a grouped-daily bar) for a session nothing else holds
        conn.execute("INSERT INTO raw_ohlcv VALUES ('BBB', 10, 11, 9, 10, 100, '2025-01-15 21:00', '1d')")
        run = retention.plan(Settings(pg_dsn=old_db), retention.RetentionParams("dry-run", as_of=AS_OF))
        outcome = retention.execute(conn, run)
        assert isinstance(outcome.adoption, retention.AdoptionPlan)
        assert outcome.summary()["legacy_tables"] == ["raw_ohlcv", "raw_ohlcv_archive", "data_retention_log"]
        assert outcome.summary()["untouched"] == ["batch_jobs", "data_ingestion_watermark", "symbol_metadata"]
        table = outcome.to_frame()["value"]
        assert table["stops adoption"] == "nothing"
        assert "raw_ohlcv (" in table["previous pipeline's tables"]
        assert _types(conn, "raw_ohlcv")["timestamp"] == "timestamp without time zone"  # unchanged
        # deploy on such a database refuses and says what to run instead
        assert table["rows re-stamped to 00:00 New York"] == "1"
        assert read_retention(Settings(pg_dsn=old_db)) == ("previous pipeline", None)  # 05_monitoring's note
        with pytest.raises(ValidationError, match="mode='adopt'"):
            retention.deploy(conn, as_of=AS_OF)
        # adopted, that bar keeps its session and is stamped like every other
        retention.adopt(conn, as_of=AS_OF)
        stamp = conn.execute("SELECT \"timestamp\" FROM raw_ohlcv WHERE symbol = 'BBB' ORDER BY 1 DESC LIMIT 1")
        assert stamp.fetchone()[0] == dt.datetime(2025, 1, 15, 5, tzinfo=dt.UTC)


def test_adopt_then_daily_upsert_then_archive_loses_nothing(old_db):
    with connect(old_db) as conn:
        before = _keys(conn)
        hot_days = conn.execute("SELECT count(*) FROM raw_ohlcv").fetchone()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "CONDVEST_"))}
    env.update(CONDVEST_PG_DSN=old_db.reveal(), PYTHON=sys.executable)
    script = str(ROOT / "sql" / "deploy_retention_policy.sh")
    out = subprocess.run([script, "adopt", "--as-of", AS_OF.isoformat()], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "checksum equal" in out.stdout and "untouched" in out.stdout

    with connect(old_db) as conn:
        types = _types(conn, "raw_ohlcv")
        assert types["timestamp"] == "timestamp with time zone" and types["close"] == "double precision"
        # the same instants: New York midnight of each session, prices and volumes as they were
        after = _keys(conn)
        pd.testing.assert_frame_equal(
            before.sort_values(["symbol", "day"]).reset_index(drop=True).astype({"close": float, "volume": float}),
            after.sort_values(["symbol", "day"]).reset_index(drop=True).astype({"close": float, "volume": float}),
        )
        stamps = conn.execute("""SELECT DISTINCT ("timestamp" AT TIME ZONE 'America/New_York')::time
                                   FROM raw_ohlcv""").fetchall()
        assert stamps == [(dt.time(0, 0),)]
        # the old log's runs, then the untouched tables
        log = conn.execute(
            "SELECT as_of, cutoff_date, status, records_archived, error_message, method"
            " FROM data_retention_log ORDER BY id"
        ).fetchall()
        assert log[:2] == [
            (dt.date(2024, 11, 2), dt.date(2021, 10, 2), "failed", 0, "invalid RAISE level", "previous pipeline"),
            (dt.date(2024, 11, 9), dt.date(2021, 10, 9), "success", 12, None, "previous pipeline"),
        ]
        assert conn.execute("SELECT count(*) FROM symbol_metadata").fetchone()[0] == 2
        assert conn.execute("SELECT latest_date FROM data_ingestion_watermark").fetchone()[0] == dt.date(2025, 1, 14)

        # the daily fetch's upsert of a session the old table holds updates that row
        day = dt.date(2025, 1, 14)
        bar = pd.DataFrame(
            {
                "symbol": ["AAA"],
                "date": [day],
                "open": [10.0],
                "high": [12.5],
                "low": [9.5],
                "close": [12.25],
                "volume": [1234.5],
                "interval": ["1d"],
                "vwap": [11.0],
                "transactions": [7],
            }
        )
        assert upsert_bars(conn, bar, Retention().cutoff(AS_OF)) == 1
        assert conn.execute("SELECT count(*) FROM raw_ohlcv").fetchone()[0] == hot_days
        row = conn.execute(
            """SELECT close, volume FROM raw_ohlcv WHERE symbol = 'AAA'
                 AND ("timestamp" AT TIME ZONE 'America/New_York')::date = %s""",
            (day,),
        ).fetchall()
        assert row == [(12.25, 1234.5)]

        # the weekly archive: every (symbol, New York date) in exactly one table
        result = retention.archive(conn, as_of=AS_OF)
        assert result.status == "success" and result.archived > 0
        final = _keys(conn)
    assert len(final) == len(before)
    assert not final.duplicated(["symbol", "day"]).any()
    assert (final[final["table"] == "archive"]["day"] < dt.date(2021, 12, 15)).all()
    assert (final[final["table"] == "hot"]["day"] >= dt.date(2021, 12, 15)).all()


def test_two_rows_for_one_session_stop_adoption_and_are_named(old_db):
    with connect(old_db) as conn:
        # the same session stamped twice: 00:00 New York and 16:00 New York (a grouped-daily bar)
        conn.execute("""INSERT INTO raw_ohlcv VALUES ('BBB', 10, 11, 9, 10, 100, '2024-03-01 21:00', '1d')""")
        with pytest.raises(ValidationError, match="BBB 2024-03-01 \\(2 rows\\)"):
            retention.adopt(conn, as_of=AS_OF)
        assert _types(conn, "raw_ohlcv")["timestamp"] == "timestamp without time zone"
        assert conn.execute("SELECT count(*) FROM data_retention_log").fetchone()[0] == 2


@pytest.mark.slow
def test_the_notebook_dry_run_then_adopt_on_the_old_database(old_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "CONDVEST_"))}
    env.update(CONDVEST_PG_DSN=old_db.reveal(), CONDVEST_RUNS_URI=str(tmp_path / "runs"), CONDVEST_AS_OF="2025-01-15")
    for mode in ("dry-run", "adopt"):
        r = subprocess.run(
            [sys.executable, "-m", "runner", "run", "04_retention", "-p", "mode", mode, "--no-progress"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    index = read_records(LocalStore(tmp_path / "runs"))
    assert index[0]["results"]["adoption_needed"] is True and index[1]["results"]["checksums_equal"] is True
