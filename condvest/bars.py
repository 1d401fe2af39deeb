"""Daily bars: parsing Polygon payloads, the bronze schema, and the bar checks. Pure: data in, data out.
(Their parquet bytes are ``condvest.parquet_rows``'.)

A bar's key is (symbol, session date); the session date is ``t`` (UTC epoch ms) converted to
America/New_York, never the host's time zone. Rows that break ``low <= open, close <= high`` or
``volume >= 0``, rows with a price that is not positive, rows whose ticker the lake cannot store safely
(``params.SYMBOL_RE``: it names a key segment), every row of a key that one answer gives twice with different
values (``conflicting``: which one is true cannot be known), and rows dated another day than the session or
range asked for, or on a day the NYSE was closed (``misdated``) are returned separately with their reason (the
quarantine), never dropped. Identical repeats of a key are plain duplicates (``dedupe``).

A close-to-close move beyond ``MoveLimits`` with no split recorded for that symbol between the two sessions
(``suspect_moves``) is not quarantined (it may be real) but listed as suspect: what a split the lake does not
know about looks like.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from condvest.calendar import is_session
from condvest.errors import AuthError, BadPayload, ParameterError
from condvest.params import storable_symbol
from condvest.settings import MoveLimits

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


#: the values two answers of one key must agree on to be plain duplicates (``timestamp`` and ``ingested_at`` aside)
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "transactions")
CONFLICT_REASON = "conflicting duplicates: the same key twice in one answer with different values"


def conflicting(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off, with the reason, every row of a (symbol, date) key that appears with different values
    (``VALUE_COLUMNS``); identical repeats stay (``dedupe`` drops them as plain duplicates)."""
    if df.empty or not df.duplicated(["symbol", "date"], keep=False).any():
        return df, df.iloc[0:0].assign(reason=pd.Series(dtype="object"))
    values = df[["symbol", "date"]].copy()
    for col in VALUE_COLUMNS:  # NaN and NA compare equal here: one sentinel for "no value"
        values[col] = pd.to_numeric(df[col], errors="coerce").astype("float64").fillna(-np.inf)
    variants = values.drop_duplicates().groupby(["symbol", "date"]).size()
    clashing = variants[variants > 1].index
    if clashing.empty:
        return df, df.iloc[0:0].assign(reason=pd.Series(dtype="object"))
    bad = pd.MultiIndex.from_frame(df[["symbol", "date"]]).isin(clashing)
    out = df[bad].copy()
    out["reason"] = CONFLICT_REASON
    return df[~bad].reset_index(drop=True), out.reset_index(drop=True)


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
    flag((df[["open", "high", "low", "close"]] <= 0).any(axis=1), "price <= 0")
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
        out["reason"] = [
            f"dated {d}, not the session asked for ({first})"
            if _is_session(d)
            else f"dated {d}, not an NYSE session (the session asked for is {first})"
            for d in out["date"]
        ]
    else:
        span = f"{first}..{last}"
        out["reason"] = [
            f"dated {d}, not an NYSE session"
            if first <= d <= last
            else f"dated {d}, outside the range asked for ({span})"
            for d in out["date"]
        ]
    return df[~bad].reset_index(drop=True), out.reset_index(drop=True)


def _is_session(day: dt.date) -> bool:
    try:
        return is_session(day)
    except ParameterError:  # outside the calendar's range: not a session it knows
        return False


def split_check(since: object) -> str:
    """The split check a suspect move calls for (README, Operations, "Splits"): every split since ``since`` read,
    a symbol that split rebased."""
    return f"python -m runner run 01_fetch -p rebase {since}"


SUSPECT_COLUMNS = ["symbol", "date", "previous_date", "previous_close", "close", "ratio"]


def suspect_moves(
    bars: pd.DataFrame, previous: pd.DataFrame, splits: pd.DataFrame, limits: MoveLimits | None = None
) -> pd.DataFrame:
    """The bars of ``bars`` whose close moved beyond ``limits`` from the symbol's previous close (the bar before it
    in ``bars`` or, for its first, in ``previous``), with no split in ``splits`` (``ticker``, ``execution_date``)
    executed after the previous session and on or before the bar's. Columns ``SUSPECT_COLUMNS``."""
    lim = limits or MoveLimits()
    cols = ["symbol", "date", "close"]
    if bars.empty:
        return pd.DataFrame(columns=SUSPECT_COLUMNS)
    new = bars[cols].assign(_new=True)
    old = previous[cols].assign(_new=False) if len(previous) else new.iloc[0:0]
    both = pd.concat([old[~old.set_index(["symbol", "date"]).index.isin(new.set_index(["symbol", "date"]).index)], new])
    both = both.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    same = both["symbol"].eq(both["symbol"].shift())
    both["previous_date"] = both["date"].shift().where(same)
    both["previous_close"] = both["close"].shift().where(same)
    both["ratio"] = both["close"] / both["previous_close"]
    moved = both[both["_new"] & same & ((both["ratio"] > lim.high) | (both["ratio"] < lim.low))]
    if moved.empty:
        return pd.DataFrame(columns=SUSPECT_COLUMNS)
    out = moved.assign(ratio=lambda f: f["ratio"].round(4))[SUSPECT_COLUMNS].reset_index(drop=True)
    return unexplained(out, splits)


def unexplained(moves: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """The ``moves`` (``symbol``, ``previous_date``, ``date``, ...) that no split in ``splits`` (``ticker``,
    ``execution_date``) explains: none executed after the previous session and on or before the move's."""
    if moves.empty or splits.empty:
        return moves.reset_index(drop=True)
    by_symbol = splits.groupby("ticker")["execution_date"].apply(list).to_dict()
    explained = [
        any(prev < d <= day for d in by_symbol.get(sym, ()))
        for sym, prev, day in zip(moves["symbol"], moves["previous_date"], moves["date"], strict=True)
    ]
    return moves[[not e for e in explained]].reset_index(drop=True)


def to_table(df: pd.DataFrame, schema: pa.Schema = BRONZE_SCHEMA) -> pa.Table:
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
