"""Daily bars: parsing Polygon payloads, the bronze schema, and the bar checks. Pure: data in, data out.
(Their parquet bytes are ``condvest.parquet_rows``'.)

A bar's key is (symbol, session date); the session date is ``t`` (UTC epoch ms) converted to
America/New_York, never the host's time zone. Rows that break ``low <= open, close <= high`` or
``volume >= 0``, rows whose ticker the lake cannot store safely (``params.SYMBOL_RE``: it names a
key segment), and rows dated another day than the session or range asked for (``misdated``) are returned
separately with their reason (the quarantine), never dropped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from condvest.errors import AuthError, BadPayload
from condvest.params import storable_symbol

BRONZE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("vwap", pa.float64()),
        ("transactions", pa.int64()),
        ("interval", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
BRONZE_COLUMNS = BRONZE_SCHEMA.names
QUARANTINE_SCHEMA = BRONZE_SCHEMA.append(pa.field("reason", pa.string()))

_REQUIRED = ("o", "h", "l", "c", "v", "t")
_NY = "America/New_York"


def check_envelope(payload: Any, *, path: str = "", symbol: str | None = None, date: str | None = None) -> list[dict]:
    """The ``results`` list of a Polygon aggregates payload; raises on an error body or a bad shape."""
    ctx = {"path": path or None, "symbol": symbol, "date": date}
    if not isinstance(payload, dict):
        raise BadPayload(f"expected a JSON object, got {type(payload).__name__}", **ctx)
    status = payload.get("status")
    if status == "NOT_AUTHORIZED":
        raise AuthError(f"not authorized: {payload.get('message', '')}", **ctx)
    if status not in ("OK", "DELAYED"):
        raise BadPayload(f"status {status!r}: {payload.get('error') or payload.get('message') or 'no message'}", **ctx)
    results = payload.get("results")
    if results is None:
        if payload.get("resultsCount", 0) not in (0, None):
            raise BadPayload("resultsCount > 0 but no results", **ctx)
        return []
    if not isinstance(results, list):
        raise BadPayload("results is not a list", **ctx)
    for r in results:
        if not isinstance(r, dict):
            raise BadPayload("a result is not an object", **ctx)
        for k in _REQUIRED:
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
                raise BadPayload(f"result field {k!r} missing or not a number: {v!r}", **ctx)
    return results


def bars_frame(
    results: Sequence[Mapping[str, Any]], symbol: str | None = None, ingested_at: dt.datetime | None = None
) -> pd.DataFrame:
    """Polygon result dicts -> a bronze-shaped DataFrame (``symbol`` from ``T`` unless given)."""
    n = len(results)
    if symbol is None and any("T" not in r or not isinstance(r["T"], str) for r in results):
        raise BadPayload("grouped result without a ticker 'T'")
    t = np.fromiter((int(r["t"]) for r in results), dtype="int64", count=n)
    ts = pd.to_datetime(t, unit="ms", utc=True)
    df = pd.DataFrame(
        {
            "symbol": [symbol] * n if symbol is not None else [r["T"] for r in results],
            "date": ts.tz_convert(_NY).date if n else np.array([], dtype=object),
            "timestamp": ts,
            "open": np.fromiter((float(r["o"]) for r in results), "float64", n),
            "high": np.fromiter((float(r["h"]) for r in results), "float64", n),
            "low": np.fromiter((float(r["l"]) for r in results), "float64", n),
            "close": np.fromiter((float(r["c"]) for r in results), "float64", n),
            "volume": np.fromiter((float(r["v"]) for r in results), "float64", n),
            "vwap": pd.array([r.get("vw") for r in results], dtype="Float64"),
            "transactions": pd.array([r.get("n") for r in results], dtype="Int64"),
            "interval": ["1d"] * n,
        }
    )
    df["ingested_at"] = pd.Timestamp(ingested_at or dt.datetime.now(dt.UTC))
    return df


def dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per (symbol, date), the last one seen winning; returns the frame and the duplicates dropped."""
    out = df.drop_duplicates(subset=["symbol", "date"], keep="last")
    return out.reset_index(drop=True), len(df) - len(out)


def check_bars(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (good, quarantined-with-reason)."""
    reasons = pd.Series("", index=df.index, dtype="object")

    def flag(mask: pd.Series, why: str) -> None:
        reasons[mask] = np.where(reasons[mask] == "", why, reasons[mask] + "; " + why)

    finite = np.isfinite(df[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")).all(axis=1)
    flag(~pd.Series(finite, index=df.index), "non-finite value")
    flag(df["low"] > df["open"], "low > open")
    flag(df["low"] > df["close"], "low > close")
    flag(df["open"] > df["high"], "open > high")
    flag(df["close"] > df["high"], "close > high")
    flag(df["volume"] < 0, "volume < 0")
    storable = df["symbol"].map(storable_symbol).astype(bool)
    flag(~storable, "ticker the lake cannot store (letters, digits, '.', '-'; at most 16)")
    bad = reasons != ""
    quarantined = df[bad].copy()
    quarantined["reason"] = reasons[bad]
    return df[~bad].reset_index(drop=True), quarantined.reset_index(drop=True)


def misdated(
    df: pd.DataFrame, first: dt.date, last: dt.date, sessions: frozenset[dt.date] | set[dt.date] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off, with the reason, the bars whose New York date is not the session asked for (``first == last``,
    a grouped answer) or lies outside the range asked for, or (with ``sessions``) on a day that is not one."""
    dates = df["date"]
    bad = (dates < first) | (dates > last)
    if sessions is not None:
        bad |= ~dates.isin(sessions)
    if not bad.any():
        return df, df.iloc[0:0].assign(reason=pd.Series(dtype="object"))
    out = df[bad].copy()
    if first == last:
        out["reason"] = [f"dated {d}, not the session asked for ({first})" for d in out["date"]]
    else:
        span = f"{first}..{last}"
        out["reason"] = [
            f"dated {d}, not an NYSE session"
            if first <= d <= last
            else f"dated {d}, outside the range asked for ({span})"
            for d in out["date"]
        ]
    return df[~bad].reset_index(drop=True), out.reset_index(drop=True)


def to_table(df: pd.DataFrame, schema: pa.Schema = BRONZE_SCHEMA) -> pa.Table:
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
