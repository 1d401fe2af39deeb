"""Reader of the legacy AWS DMS export ``public/raw_ohlcv/LOAD*.parquet`` into the bronze row schema.

DMS copied the Postgres table ``raw_ohlcv`` and added its own ``timestamp`` column, so the bar time
lives in ``timestamp_1`` (a UTC instant, 00:00 New York of the session); ``timestamp`` is ignored.
Files written at different times disagree on types (int vs double volume, ms vs µs timestamps, a
timestamp stored as text), so every column is mapped and cast explicitly here; a file that cannot be
read or lacks a required column raises ``CorruptObject`` naming the file.

    read_dms_file(store, key) -> pa.Table          one file, in BRONZE_SCHEMA (ingested_at null)
    list_dms_files(store) -> list[ObjectInfo]      the export's LOAD*.parquet objects, in key order
    readable_export(store) -> list[ObjectInfo]     the export files readers still need (none once retired)
    BRONZE_SCHEMA                                  condvest.bars.BRONZE_SCHEMA, re-exported

Which export files are readable is a fact of the lake that every reader shares (the resampler, its charts):
03_migrate retires the export by writing a passing validation report that names exactly the files that are
there (``REPORT_KEY``, written by ``condvest.migrate``; read here by ``load_report``, judged by
``report_covers``).
"""

from __future__ import annotations

import io
import json
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condvest.bars import BRONZE_SCHEMA
from condvest.calendar import NEW_YORK
from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import DMS_PREFIX, METADATA_PREFIX
from condvest.storage import ObjectInfo, Store

log = logging.getLogger(__name__)

UTC_US = pa.timestamp("us", tz="UTC")
#: 03_migrate's validation report: the export files it validated (key, size, etag), per symbol checks, ``passed``
REPORT_KEY = f"{METADATA_PREFIX}/dms_migration_report.json"

#: bronze column <- DMS column (``timestamp`` is DMS's own artefact and deliberately absent)
DMS_COLUMNS = {
    "symbol": "symbol",
    "timestamp": "timestamp_1",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "vwap": "vwap",
    "transactions": "transactions",
    "interval": "interval",
}
_REQUIRED = ("symbol", "timestamp_1", "open", "high", "low", "close", "volume")


def list_dms_files(store: Store) -> list[ObjectInfo]:
    """The DMS export's ``LOAD*.parquet`` objects, in key order (empty when the export is gone)."""
    prefix = f"{DMS_PREFIX}/LOAD"
    return [o for o in store.list(prefix) if o.key.endswith(".parquet") and "/" not in o.key[len(DMS_PREFIX) + 1 :]]


def _to_utc_us(col: pa.ChunkedArray, key: str) -> pa.ChunkedArray:
    """Any timestamp representation DMS produced -> timestamp[us, UTC]."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:  # DMS writes naive UTC instants
            col = pc.assume_timezone(col.cast(pa.timestamp(t.unit)), "UTC")
        return col.cast(UTC_US)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        import pandas as pd

        try:
            parsed = pd.to_datetime(pd.Series(col.to_pylist(), dtype="object"), utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise CorruptObject(f"timestamp_1 holds text that is not a timestamp: {exc}", key=key) from exc
        return pa.chunked_array([pa.array(parsed.dt.as_unit("us"), type=UTC_US)])
    if pa.types.is_integer(t):
        # epoch numbers: pick the unit by magnitude (ms below 1e14, µs below 1e17, else ns)
        arr = col.cast(pa.int64())
        mx = pc.max(pc.abs(arr)).as_py() or 0
        unit = "ms" if mx < 10**14 else "us" if mx < 10**17 else "ns"
        return arr.cast(pa.timestamp(unit)).cast(pa.timestamp("us")).cast(UTC_US)
    raise CorruptObject(f"timestamp_1 has unsupported type {t}", key=key)


def _to_float(col: pa.ChunkedArray, name: str, key: str) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    try:
        if pa.types.is_decimal(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t):
            return col.cast(pa.float64())
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return col.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CorruptObject(f"column {name} cannot be read as a number: {exc}", key=key) from exc
    raise CorruptObject(f"column {name} has unsupported type {t}", key=key)


def _to_int(col: pa.ChunkedArray, name: str, key: str) -> pa.ChunkedArray:
    f = _to_float(col, name, key)
    frac = pc.not_equal(f, pc.floor(f))
    if pc.any(frac).as_py():
        raise CorruptObject(f"column {name} holds non-integral values", key=key)
    return f.cast(pa.int64(), safe=False)


def _to_str(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.string())


def normalize_dms_table(table: pa.Table, key: str) -> pa.Table:
    """Map one DMS table to ``BRONZE_SCHEMA`` (pure; ``key`` only names the file in errors)."""
    names = set(table.column_names)
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise CorruptObject(f"DMS file lacks column(s) {', '.join(missing)}", key=key)
    n = table.num_rows
    ts = _to_utc_us(table.column("timestamp_1"), key)
    if ts.null_count:
        raise CorruptObject(f"timestamp_1 has {ts.null_count} null value(s)", key=key)
    local = pc.local_timestamp(ts.cast(pa.timestamp("us", tz=str(NEW_YORK))))
    date = pc.cast(pc.floor_temporal(local, unit="day"), pa.timestamp("us")).cast(pa.date32())
    cols: dict[str, pa.ChunkedArray] = {
        "symbol": _to_str(table.column("symbol")),
        "date": date,
        "timestamp": ts,
    }
    for c in ("open", "high", "low", "close", "volume"):
        cols[c] = _to_float(table.column(c), c, key)
        if cols[c].null_count:
            raise CorruptObject(f"column {c} has {cols[c].null_count} null value(s)", key=key)
    cols["vwap"] = (
        _to_float(table.column("vwap"), "vwap", key)
        if "vwap" in names
        else pa.chunked_array([pa.nulls(n, pa.float64())])
    )
    cols["transactions"] = (
        _to_int(table.column("transactions"), "transactions", key)
        if "transactions" in names
        else pa.chunked_array([pa.nulls(n, pa.int64())])
    )
    cols["interval"] = (
        pc.fill_null(_to_str(table.column("interval")), "1d")
        if "interval" in names
        else pa.chunked_array([pa.array(["1d"] * n, pa.string())])
    )
    cols["ingested_at"] = pa.chunked_array([pa.nulls(n, UTC_US)])
    if cols["symbol"].null_count:
        raise CorruptObject(f"column symbol has {cols['symbol'].null_count} null value(s)", key=key)
    return pa.Table.from_arrays([cols[f.name] for f in BRONZE_SCHEMA], schema=BRONZE_SCHEMA)


def read_dms_file(store: Store, key: str, symbols: set[str] | None = None) -> pa.Table:
    """Read one DMS export file into ``BRONZE_SCHEMA`` (rows of ``symbols`` only, when given)."""
    data = store.get(key)
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"cannot read parquet: {exc}", key=key) from exc
    if symbols is not None and "symbol" in table.column_names:
        table = table.filter(pc.is_in(_to_str(table.column("symbol")), pa.array(sorted(symbols), pa.string())))
    out = normalize_dms_table(table, key)
    log.debug("dms file read key=%s rows=%d", key, out.num_rows)
    return out


def sources_json(sources: list[ObjectInfo]) -> list[dict[str, object]]:
    """Export files as the validation report names them: ``{key, size, etag}`` in key order."""
    return [{"key": o.key, "size": o.size, "etag": o.etag} for o in sorted(sources, key=lambda o: o.key)]


def load_report(store: Store) -> dict | None:
    """The last validation report, or ``None``."""
    try:
        raw = store.get(REPORT_KEY)
    except ObjectNotFound:
        return None
    try:
        doc = json.loads(raw)
        for k in ("passed", "source_prefix", "sources", "symbols"):
            doc[k]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(f"unreadable migration report: {exc}", key=REPORT_KEY) from exc
    return doc


def report_covers(report: dict | None, source_prefix: str, current: list[dict]) -> bool:
    """True when ``report`` passed for ``source_prefix`` and names exactly the files in ``current`` (or a
    subset of them, each unchanged, after an interrupted cleanup that the report records)."""
    if report is None or not report.get("passed") or report.get("source_prefix") != source_prefix:
        return False
    if report["sources"] == current:
        return True
    reported = {s["key"]: s for s in report["sources"]}
    return bool((report.get("cleanup") or {}).get("action")) and all(reported.get(s["key"]) == s for s in current)


def readable_export(store: Store) -> list[ObjectInfo]:
    """The DMS export files that readers (the resampler, its charts) must still read.

    None once a passing migration report names exactly the files that are there now (keys, sizes, etags):
    bronze then holds the same rows, validated, and reading the export beside it would read the history
    twice. A new or changed export file brings the whole export back, with a warning saying so (run
    03_migrate again to retire it). An unreadable report also keeps the export readable (warned): reading
    it is always correct, only slower."""
    files = list_dms_files(store)
    if not files:
        return []
    try:
        report = load_report(store)
    except CorruptObject as exc:
        log.warning("dms_export=read reason=unreadable_report error=%r", str(exc))
        return files
    # every *.parquet under the export's prefix, sub-folders included: what 03_migrate validated
    exported = [o for o in store.list(DMS_PREFIX + "/") if o.key.endswith(".parquet")]
    if report_covers(report, DMS_PREFIX, sources_json(exported)):
        log.info("dms_export=retired run_id=%s files=%d", report.get("run_id"), len(files))  # type: ignore[union-attr]
        return []
    if report is not None and report.get("passed") and report.get("source_prefix") == DMS_PREFIX:
        log.warning(
            "dms_export=read reason=changed_since_migration run_id=%s files=%d hint=%r",
            report.get("run_id"),
            len(files),
            "a file is new or changed since the validated migration: run 03_migrate again",
        )
    return files
