"""Helpers for the resample tests: small bronze lakes and an independent pandas computation of the bars.

(No tests here; the name keeps it among the resample test files.)
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest.bars import BRONZE_SCHEMA
from condvest.lake import BRONZE_PREFIX, bronze_daily_key, bronze_history_key, parse_bronze_key
from condvest.storage import Store

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def bronze_table(symbol: str, days: list[dt.date], seed: int, ingested: dt.datetime | None = T0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(days)
    close = np.round(10 + rng.random(n) * 5, 2)
    open_ = np.round(close + rng.integers(-50, 50, n) / 100, 2)
    high = np.maximum(open_, close) + 0.25
    low = np.minimum(open_, close) - 0.25
    volume = rng.integers(0, 4000, n) * 0.5  # exact in binary: sums do not depend on order
    ts = [dt.datetime.combine(d, dt.time(4), tzinfo=dt.UTC) for d in days]
    return pa.table(
        {
            "symbol": [symbol] * n,
            "date": pa.array(days, pa.date32()),
            "timestamp": pa.array(ts, BRONZE_SCHEMA[2].type),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "vwap": pa.nulls(n, pa.float64()),
            "transactions": pa.nulls(n, pa.int64()),
            "interval": ["1d"] * n,
            "ingested_at": pa.array([ingested] * n, BRONZE_SCHEMA[-1].type),
        },
        schema=BRONZE_SCHEMA,
    )


def _bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def write_history(store: Store, symbol: str, days: list[dt.date], seed: int, ingested: dt.datetime = T0) -> None:
    store.put(bronze_history_key(symbol), _bytes(bronze_table(symbol, sorted(days), seed, ingested)))


def write_daily(store: Store, symbol: str, day: dt.date, seed: int, ingested: dt.datetime | None = T0) -> None:
    store.put(bronze_daily_key(symbol, day), _bytes(bronze_table(symbol, [day], seed, ingested)))


def reference_rows(store: Store) -> pd.DataFrame:
    """Bronze deduplicated the documented way, read with pyarrow/pandas only (no DuckDB)."""
    frames = []
    for o in store.list(f"{BRONZE_PREFIX}/symbol="):
        parsed = parse_bronze_key(o.key)
        if parsed is None:
            continue
        df = pq.read_table(io.BytesIO(store.get(o.key))).to_pandas()
        df["rank"] = 2 if parsed[1] else 1
        df["fname"] = o.key
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["symbol", "date", "open", "high", "low", "close", "volume"])
    df = pd.concat(frames, ignore_index=True)
    df["ing"] = pd.to_datetime(df["ingested_at"], utc=True).fillna(pd.Timestamp("1900-01-01", tz="UTC"))
    df = df.sort_values(["symbol", "date", "ing", "rank", "fname"], ascending=[True, True, False, False, False])
    df = df.drop_duplicates(["symbol", "date"], keep="first")
    return df[["symbol", "date", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def reference_bars(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """The documented semantics, computed with pandas alone."""
    out = []
    for sym, g in rows.sort_values(["symbol", "date"]).groupby("symbol", sort=True):
        g = g.reset_index(drop=True)
        for k in range(0, len(g), n):
            b = g.iloc[k : k + n]
            out.append(
                (
                    sym,
                    b["date"].iloc[0],
                    b["date"].iloc[-1],
                    b["open"].iloc[0],
                    b["high"].max(),
                    b["low"].min(),
                    b["close"].iloc[-1],
                    float(b["volume"].sum()),
                    len(b),
                )
            )
    cols = ["symbol", "date", "end_date", "open", "high", "low", "close", "volume", "sessions"]
    return _norm(pd.DataFrame(out, columns=cols))


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ("date", "end_date"):
        df[c] = pd.to_datetime(df[c]).dt.date if len(df) else df[c]
    df["sessions"] = df["sessions"].astype("int64")
    return df.sort_values(["symbol", "date"]).reset_index(drop=True)


def silver_frame(store: Store, n: int) -> pd.DataFrame:
    """Every silver bar of interval ``n``, checking each file sits in the month of its bars."""
    frames = []
    for o in store.list(f"silver/silver_{n}d/"):
        t = pq.read_table(io.BytesIO(store.get(o.key))).to_pandas()
        ym = {
            f"year={d.year:04d}/month={d.month:02d}/data_{n}d_{d.year:04d}{d.month:02d}.parquet"
            for d in pd.to_datetime(t["date"]).dt.date
        }
        assert len(ym) <= 1 and (not ym or o.key.endswith(ym.pop())), o.key
        frames.append(t)
    cols = ["symbol", "date", "end_date", "open", "high", "low", "close", "volume", "sessions"]
    if not frames:
        return _norm(pd.DataFrame(columns=cols))
    return _norm(pd.concat(frames, ignore_index=True)[cols])


def assert_silver_matches(store: Store, ns: tuple[int, ...]) -> None:
    rows = reference_rows(store)
    for n in ns:
        got, want = silver_frame(store, n), reference_bars(rows, n)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=f"silver {n}d")
