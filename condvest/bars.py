"""Daily bars: parsing Polygon payloads, the bronze schema, and the bar checks. Pure: data in, data out.

A bar's key is (symbol, session date); the session date is ``t`` (UTC epoch ms) converted to
America/New_York, never the host's time zone. Rows that break ``low <= open, close <= high`` or
``volume >= 0``, and rows whose ticker the lake cannot store safely (``params.SYMBOL_RE``: it names a
key segment), are returned separately with their reason (the quarantine), never dropped.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def to_table(df: pd.DataFrame, schema: pa.Schema = BRONZE_SCHEMA) -> pa.Table:
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def row_parquet_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of a file of one or a few rows (a daily file): uncompressed, no column statistics and no
    dictionary pages, which a reader gains nothing from in one row and which cost most of the encoding."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", write_statistics=False, use_dictionary=False)
    return buf.getvalue()


def row_files(table: pa.Table) -> list[bytes]:
    """``row_parquet_bytes`` of each row of ``table`` (one file per row, as a daily fetch writes), byte for byte.

    pyarrow spends 0.2-0.4 ms of CPU on each one-row file (5,350 a day). Such files differ only where their
    values are: rows whose text values have the same lengths and that hold no null share one layout. So one
    file per layout is encoded by pyarrow, and a second one with every value changed shows where each value
    lies; the other rows' files are that file with their values copied in (about 50x cheaper). Each layout is
    checked by encoding one more row with pyarrow and comparing the bytes; a layout that fails the check, rows
    with nulls and column types other than fixed-width and text are encoded by pyarrow itself."""
    n = table.num_rows
    if n == 0:
        return []
    table = table.combine_chunks()
    cols = [table.column(i).chunk(0) for i in range(table.num_columns)]  # one chunk each after combine_chunks
    out: list[bytes | None] = [None] * n
    if not all(_fixed_width(a.type) or _is_text(a.type) for a in cols):
        return [row_parquet_bytes(table.slice(i, 1)) for i in range(n)]
    nulls = np.zeros(n, dtype=bool)
    for a in cols:
        if a.null_count:
            nulls |= a.is_null().to_numpy(zero_copy_only=False)
    lengths = [pc.binary_length(a).to_numpy(zero_copy_only=False) for a in cols if _is_text(a.type)]
    layout = np.stack(lengths, axis=1) if lengths else np.zeros((n, 0), dtype=np.int64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in np.flatnonzero(~nulls).tolist():
        groups.setdefault(tuple(layout[i].tolist()), []).append(i)
    for idx in groups.values():
        files = _patched_files(table, cols, np.asarray(idx))
        for j, i in enumerate(idx):
            out[i] = files[j] if files is not None else row_parquet_bytes(table.slice(i, 1))
    return [f if f is not None else row_parquet_bytes(table.slice(i, 1)) for i, f in enumerate(out)]


def _fixed_width(t: pa.DataType) -> bool:
    return pa.types.is_primitive(t) and not pa.types.is_boolean(t) and t.bit_width % 8 == 0


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_binary(t)


def _value_bytes(a: pa.Array, rows: np.ndarray, width: int | None = None) -> np.ndarray:
    """The raw bytes of rows ``rows`` of ``a`` (no nulls there), one row per line: fixed-width values as stored,
    text values (all ``width`` bytes long) from the data buffer."""
    if _fixed_width(a.type):
        w = a.type.bit_width // 8
        data = np.frombuffer(a.buffers()[1], dtype=np.uint8)
        return data[(a.offset + rows)[:, None] * w + np.arange(w)]
    offsets = np.frombuffer(a.buffers()[1], dtype=np.int32)[a.offset : a.offset + len(a) + 1]
    data = np.frombuffer(a.buffers()[2], dtype=np.uint8) if a.buffers()[2] is not None else np.zeros(0, np.uint8)
    return data[offsets[rows][:, None] + np.arange(width or 0)]


def _changed(a: pa.Array, row: int) -> pa.Array:
    """Row ``row`` of ``a`` with every byte of its value changed (text stays ASCII of the same length)."""
    if _fixed_width(a.type):
        raw = _value_bytes(a, np.array([row]))[0] ^ 0xFF
        return pa.Array.from_buffers(a.type, 1, [None, pa.py_buffer(raw.tobytes())])
    value = a[row].as_py()
    raw = value.encode() if isinstance(value, str) else value
    other = bytes(ord("a") if b != ord("a") else ord("b") for b in raw)
    return pa.array([other.decode() if isinstance(value, str) else other], a.type)


def _patched_files(table: pa.Table, cols: list[pa.Array], idx: np.ndarray) -> list[bytes] | None:
    """The files of rows ``idx`` (one layout, no nulls) patched into a file pyarrow encoded; ``None`` when the
    layout cannot be found or fails its check (the caller then encodes the rows with pyarrow)."""
    first = int(idx[0])
    base = np.frombuffer(row_parquet_bytes(table.slice(first, 1)), dtype=np.uint8)
    if len(idx) == 1:
        return [base.tobytes()]
    variant = pa.Table.from_arrays([_changed(a, first) for a in cols], schema=table.schema)
    moved = np.frombuffer(row_parquet_bytes(variant), dtype=np.uint8)
    if len(moved) != len(base):
        return None
    diff = np.flatnonzero(base != moved)
    widths = [
        a.type.bit_width // 8 if _fixed_width(a.type) else int(pc.binary_length(a[first : first + 1])[0].as_py())
        for a in cols
    ]
    # each value is one run of changed bytes, in column order (page headers and levels between them are equal)
    starts = diff[np.r_[True, np.diff(diff) > 1]] if len(diff) else diff
    runs = np.diff(np.r_[np.flatnonzero(np.r_[True, np.diff(diff) > 1]), len(diff)]) if len(diff) else diff
    if [int(r) for r in runs] != [w for w in widths if w]:
        return None
    files = np.tile(base, (len(idx), 1))
    at = iter(starts.tolist())
    for a, w in zip(cols, widths, strict=True):
        if w:
            p = next(at)
            files[:, p : p + w] = _value_bytes(a, idx, w)
    out = [f.tobytes() for f in files]
    if out[1] != row_parquet_bytes(table.slice(int(idx[1]), 1)):  # the check: pyarrow's own bytes for a second row
        return None
    return out
