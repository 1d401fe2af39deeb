"""The cache follows bronze (issue 21 item 2, fault row 37): raw_ohlcv compared with bronze over the retention
window, session by session, and what differs re-filled from bronze, on a real PostgreSQL and a local lake."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from condvest import calendar as cal
from condvest.bars import bars_frame, to_table
from condvest.bronze import update_history, write_daily_files
from condvest.monitoring.truth import read_truth
from condvest.pg_cache import ensure_cache_table, read_last_sync, upsert_bars
from condvest.retention.sync import bronze_figures, postgres_figures, sync
from condvest.runs import read_records
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT
from tests.fixtures.retention import connect

AS_OF = dt.date(2025, 10, 17)
CUTOFF = dt.date(2025, 9, 2)


def _bars(symbols: list[str], days: list[dt.date], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = []
    for s in symbols:
        for d in days:
            c = float(rng.uniform(1, 300))
            v, n = round(float(rng.uniform(0, 1e7)), 2), int(rng.integers(1, 9999))
            t = cal.ny_close_epoch_ms(d)
            out.append({"T": s, "t": t, "o": c, "h": c * 1.02, "l": c * 0.97, "c": c, "v": v, "vw": c * 1.001, "n": n})
    return bars_frame(out, ingested_at=dt.datetime(2025, 10, 17, 22, tzinfo=dt.UTC))


def _pg_rows(conn) -> pd.DataFrame:
    got = conn.execute(
        """SELECT symbol, ("timestamp" AT TIME ZONE 'America/New_York')::date, open, high, low, close, volume, vwap,
                  transactions FROM raw_ohlcv ORDER BY 1, 2"""
    ).fetchall()
    return pd.DataFrame(got, columns=["symbol", "date", "open", "high", "low", "close", "volume", "vwap", "tx"])


def test_rows_postgres_lost_or_changed_behind_bronzes_back_are_refilled_from_bronze(pg_dsn, tmp_path):
    store = LocalStore(str(tmp_path / "lake"))
    days = cal.sessions_between(dt.date(2025, 8, 25), AS_OF)  # a few sessions before the cutoff too
    old, recent = days[:-5], days[-5:]
    history, daily = _bars(["AAA", "BB", "C.W"], old, 1), _bars(["AAA", "BB", "C.W"], recent, 2)
    for symbol, part in history.groupby("symbol"):  # compacted history, and the daily files of the last sessions
        update_history(store, str(symbol), [(to_table(part).replace_schema_metadata(None), "daily")], exists=False)
    write_daily_files(store, daily, run_id="fetch-20251017-000000-aaaa")
    everything = pd.concat([history, daily], ignore_index=True)
    with connect(pg_dsn) as conn:
        ensure_cache_table(conn)
        upsert_bars(conn, everything, CUTOFF)
        clean = sync(conn, store, CUTOFF, AS_OF)
        assert clean.summary()["sessions_differing"] == 0 and clean.sessions == len([d for d in days if d >= CUTOFF])
        lost, changed = days[-12], days[-2]  # a failed backfill lost a session's rows; a value drifted
        conn.execute(
            """DELETE FROM raw_ohlcv WHERE ("timestamp" AT TIME ZONE 'America/New_York')::date = %s""", (lost,)
        )
        conn.execute(
            """DELETE FROM raw_ohlcv
               WHERE symbol = 'BB' AND ("timestamp" AT TIME ZONE 'America/New_York')::date = %s""",
            (days[-20],),
        )
        conn.execute(
            """UPDATE raw_ohlcv SET vwap = vwap + 0.0001
               WHERE symbol = 'C.W' AND ("timestamp" AT TIME ZONE 'America/New_York')::date = %s""",
            (changed,),
        )
        report = sync(conn, store, CUTOFF, AS_OF)
        t = report.to_frame().set_index("date")
        assert list(t.index) == [days[-20], lost, changed]
        assert t.loc[lost, "bronze_rows"] == 3 and t.loc[lost, "postgres_rows"] == 0
        assert t.loc[days[-20], "postgres_rows"] == 2
        assert bool(t.loc[changed, "checksum_equal"]) is False and t.loc[changed, "postgres_rows"] == 3
        assert set(t["outcome"]) == {"refilled"} and report.rows_refilled == 9  # every bronze row of those sessions
        shown = read_truth(store, CUTOFF)  # what 05_monitoring shows
        assert "3 session(s) differed, 9 rows re-filled, 0 still differ" in shown.detail()
        assert shown.sync_sessions["date"].tolist() == [str(d) for d in (days[-20], lost, changed)]
        want = everything[everything["date"] >= CUTOFF].sort_values(["symbol", "date"]).reset_index(drop=True)
        got = _pg_rows(conn)
        assert got["date"].tolist() == want["date"].tolist() and got["symbol"].tolist() == want["symbol"].tolist()
        for col in ("open", "high", "low", "close", "volume", "vwap"):
            assert got[col].tolist() == want[col].tolist(), col
        assert sync(conn, store, CUTOFF, AS_OF).summary()["sessions_differing"] == 0  # nothing left to do
        last = read_last_sync(store)
        assert last is not None and last["sessions_differing"] == 0

        # a row Postgres holds and bronze does not is never deleted: the session still differs, and says so
        extra = _bars(["ZZZ"], [recent[0]], 3)
        upsert_bars(conn, extra, CUTOFF)
        kept = sync(conn, store, CUTOFF, AS_OF)
        assert kept.to_frame()["outcome"].tolist() == ["still differs (Postgres holds rows bronze does not)"]
        assert read_last_sync(store)["sessions_still_differing"] == 1


def test_the_checksum_is_the_same_on_both_sides_and_moves_with_any_value(pg_dsn):
    rows = _bars(["A", "BRK.B", "XYZW"], cal.sessions_between(dt.date(2025, 10, 6), AS_OF), 4)
    rows.loc[0, "vwap"] = None
    rows.loc[1, "transactions"] = None
    with connect(pg_dsn) as conn:
        ensure_cache_table(conn)
        upsert_bars(conn, rows, CUTOFF)
        pg = postgres_figures(conn, CUTOFF, AS_OF)
    mine = bronze_figures(rows)
    assert mine["rows"].tolist() == pg["rows"].tolist() and mine["checksum"].tolist() == pg["checksum"].tolist()
    for col, delta in (("close", 0.0001), ("volume", 1.0), ("transactions", 1)):
        moved = rows.copy()
        moved.loc[2, col] = moved.loc[2, col] + delta
        assert bronze_figures(moved)["checksum"].tolist() != mine["checksum"].tolist(), col
    renamed = rows.copy()
    renamed.loc[2, "symbol"] = "B"
    assert bronze_figures(renamed)["checksum"].tolist() != mine["checksum"].tolist()


@pytest.mark.slow
def test_the_weekly_pipeline_refills_the_rows_postgres_lost(pg_dsn, tmp_path):
    """``python -m runner pipeline weekly`` (archive, then sync) brings back rows deleted behind bronze's back."""
    store = LocalStore(str(tmp_path / "lake"))
    days = cal.sessions_between(dt.date(2025, 9, 29), AS_OF)
    rows = _bars(["AAA", "BB"], days, 5)
    write_daily_files(store, rows, run_id="fetch-20251017-000000-bbbb")
    lost = days[3]
    with connect(pg_dsn) as conn:
        ensure_cache_table(conn)
        upsert_bars(conn, rows, CUTOFF)
        conn.execute(
            """DELETE FROM raw_ohlcv WHERE ("timestamp" AT TIME ZONE 'America/New_York')::date >= %s""", (lost,)
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "CONDVEST_", "POLYGON_"))}
    env.update(
        CONDVEST_PG_DSN=pg_dsn.reveal(),
        CONDVEST_LAKE_URI=str(tmp_path / "lake"),
        CONDVEST_RUNS_URI=str(tmp_path / "runs"),
        CONDVEST_AS_OF=AS_OF.isoformat(),
        CONDVEST_CHART_PNG="0",
    )
    r = subprocess.run(
        [sys.executable, "-m", "runner", "pipeline", "weekly", "--no-progress"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with connect(pg_dsn) as conn:
        assert _pg_rows(conn)[["symbol", "date"]].values.tolist() == rows[["symbol", "date"]].values.tolist()
    index = read_records(LocalStore(tmp_path / "runs"))
    synced = [rec["results"] for rec in index if rec["results"].get("mode") == "sync"]
    assert synced and synced[-1]["sessions_differing"] == len(days) - 3 and synced[-1]["sessions_still_differing"] == 0
