"""The demo's deployment of the previous pipeline: written once, then adopted with nothing lost."""

from __future__ import annotations

import datetime as dt

import psycopg

from condvest import retention
from condvest.lake import checkpoint_key
from condvest.offline.market import SyntheticMarket
from condvest.offline.previous import seed_previous_deployment
from condvest.storage import LocalStore


def test_the_demo_deployment_is_adopted(pg_dsn, tmp_path):
    store = LocalStore(tmp_path / "lake")
    market = SyntheticMarket(n_symbols=4, seed=7)
    start, end = dt.date(2025, 6, 2), dt.date(2025, 8, 29)
    with psycopg.connect(pg_dsn.reveal(), autocommit=True) as conn:
        seeded = seed_previous_deployment(conn, store, market, start, end)
        assert seeded["raw_ohlcv rows"] == len(market.frame(start, end)) and seeded["bronze files"] > 0
        assert seed_previous_deployment(conn, store, market, start, end) == {}  # never twice
        assert b"last_processed_date" in store.get(checkpoint_key(3))
        report = retention.adopt(conn, as_of=dt.date(2025, 9, 2))
        assert report.summary()["checksums_equal"] and report.summary()["log_rows_carried"] == 1
        assert report.summary()["rows"]["raw_ohlcv"] == seeded["raw_ohlcv rows"]
