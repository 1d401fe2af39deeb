"""Writing silver: the full rewrite (one partitioned COPY, moved into place) and the incremental pass
(only the month files that hold bars of changed symbols, each rewritten whole)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from condvest.crash import crash_point
from condvest.display import progress_disable
from condvest.errors import PreconditionFailed
from condvest.lake import silver_key, silver_prefix
from condvest.lake_read import batched_rows, connect, load_rows, register_dms
from condvest.resample.engine import SILVER_COLUMNS, bars_sql, silver_bytes
from condvest.resample.result import IntervalResult
from condvest.resample.state import MIN_DATE, TAIL_COLUMNS, Changes, SilverState
from condvest.storage import Store, put_if_unchanged

log = logging.getLogger(__name__)
_COLS = ", ".join(SILVER_COLUMNS)


def write_full(
    con: duckdb.DuckDBPyConnection, store: Store, ns: tuple[int, ...], threads: int | None = None
) -> dict[int, tuple[int, int]]:
    """Write every month file of every interval from temp table ``rows``; returns {n: (bars, months)}.

    One interval at a time: DuckDB aggregates the bars in date order and hands them over in record batches;
    Arrow cuts them into months, and a thread pool encodes and writes each month file as soon as the month is
    complete (DuckDB's own partitioned COPY is several times slower here). Python holds about one batch and
    the months being written, never the whole interval, so memory does not grow with the history.
    """
    out: dict[int, tuple[int, int]] = {}
    for n in tqdm(ns, desc="02_resample silver intervals", unit="interval", disable=progress_disable()):
        old = {o.key: o.etag for o in store.list(silver_prefix(n))}
        bars, written = stream_months(
            con,
            store,
            n,
            lambda m, n=n: silver_key(n, m // 12, m % 12 + 1),
            old,
            threads,  # type: ignore[misc]
        )
        _delete_months(store, {k: e for k, e in old.items() if k not in written})  # months without a bar now
        out[n] = (bars, len(written))
    return out


def stream_months(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    n: int,
    key_of: Callable[[int], str],
    etags: dict[str, str],
    threads: int | None = None,
) -> tuple[int, set[str]]:
    """Write the bars of interval ``n`` from temp table ``rows``, one object per month (``key_of(year * 12 +
    month - 1)``), each sorted by symbol and date, only over the version read (``etags``; absent: only created).
    Returns (bars, keys written)."""
    workers = max(2, 2 * (threads or os.cpu_count() or 2), store.write_threads)  # S3: PUTs wait on the network
    reader = con.execute(f"SELECT * FROM ({bars_sql('rows')}) ORDER BY date", {"n": n}).fetch_record_batch(_BATCH_ROWS)

    def put(key: str, part: pa.Table) -> None:
        part = part.take(pc.sort_indices(part, [("symbol", "ascending"), ("date", "ascending")]))
        _put_month(store, key, silver_bytes(part), etags.get(key))
        crash_point("resample.mid_silver")

    bars, written, pending, held = 0, set(), deque(), 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for month, part in _months(reader):
            key = key_of(month)
            bars += part.num_rows
            written.add(key)
            size = part.get_total_buffer_size()
            pending.append((pool.submit(put, key, part), size))
            held += size
            # bounded in months and in bytes (a recent month of every symbol is tens of MB at 10x the seed's
            # symbols): the oldest writes finish before reading on
            while pending and (len(pending) > 2 * workers or held > _PENDING_BYTES):
                done, size = pending.popleft()
                done.result()
                held -= size
        for f, _ in pending:
            f.result()
    return bars, written


def state_frames(con: duckdb.DuckDBPyConnection, tail_len: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From temp table ``rows``: per symbol (sessions n, first_date, last_date) and its last ``tail_len`` rows."""
    symbols = con.execute(
        "SELECT symbol, count(*) AS n, min(date) AS first_date, max(date) AS last_date "
        "FROM rows GROUP BY symbol ORDER BY symbol"
    ).df()
    tail = con.execute(
        "SELECT r.symbol, r.i, r.date, r.open, r.high, r.low, r.close, r.volume FROM rows r "
        "JOIN (SELECT symbol, count(*) AS n FROM rows GROUP BY symbol) c USING (symbol) "
        "WHERE r.i >= c.n - $t ORDER BY r.symbol, r.i",
        {"t": tail_len},
    ).df()
    for df in (symbols, tail):
        for col in ("date", "first_date", "last_date"):
            if col in df:
                df[col] = pd.to_datetime(df[col]).dt.date
    return symbols, tail


#: rows per record batch handed over by DuckDB while writing month files
_BATCH_ROWS = 1 << 17
#: bytes of month tables handed to the writer threads and not written yet; beyond it, reading waits
_PENDING_BYTES = 192 << 20


def _months(reader: pa.RecordBatchReader) -> Iterator[tuple[int, pa.Table]]:
    """Cut a stream of bars in date order into months: (year * 12 + month - 1, that month's bars), each month
    yielded once it is complete."""
    held: list[pa.RecordBatch] = []
    month = None
    for batch in reader:
        if batch.num_rows == 0:
            continue
        d = batch.column("date")
        ym = pc.add(pc.multiply(pc.year(d), 12), pc.subtract(pc.month(d), 1)).to_numpy()
        cuts = np.flatnonzero(np.diff(ym)) + 1
        starts = np.concatenate([[0], cuts]).astype(int)
        ends = np.concatenate([cuts, [len(ym)]]).astype(int)
        for a, b in zip(starts, ends, strict=True):
            m = int(ym[a])
            if month is not None and m != month:
                yield month, pa.Table.from_batches(held)
                held = []
            month = m
            held.append(batch.slice(a, b - a))
    if held:
        yield month, pa.Table.from_batches(held)  # type: ignore[misc]


def _date(x: object) -> dt.date | None:
    if x is None or x is pd.NaT or (isinstance(x, float) and np.isnan(x)):
        return None
    if isinstance(x, pd.Timestamp):
        return x.date()
    if isinstance(x, np.datetime64):
        return pd.Timestamp(x).date()
    return x  # type: ignore[return-value]


def _isin(col: pd.Series, values: object) -> np.ndarray:
    """``col.isin(values)`` for a column of symbols, computed by Arrow: pandas' ``isin`` on Arrow-backed strings
    walks the column as Python objects (0.1-0.2 s a call at 5,350 symbols, four calls a daily run)."""
    wanted = pa.array(list(values), pa.string())  # type: ignore[call-overload]
    return pc.is_in(pa.array(col, pa.string()), value_set=wanted).to_numpy(zero_copy_only=False)


def _load_delta(
    con: duckdb.DuckDBPyConnection, store: Store, base: SilverState, ch: Changes, sources: pd.DataFrame
) -> int:
    """Temp table ``delta``: every row of the slow symbols (numbered from 0), and for append symbols their
    stored tail plus the new daily rows numbered after it. Returns the bronze rows read."""
    slow = set(ch.since) - ch.append
    files = sources[(sources["kind"] != "dms") & _isin(sources["symbol"], slow)]["key"].tolist()
    dms_keys = sources.loc[sources["kind"] == "dms", "key"].tolist()
    if slow and dms_keys:
        register_dms(con, store, dms_keys, slow)
    read = load_rows(con, store, "delta", files if slow else [], dms=bool(slow and dms_keys), symbols=slow)
    if ch.append:
        etags = dict(zip(sources["key"], sources["etag"], strict=True))
        batch, rest = batched_rows(store, sorted(ch.new_files), etags)
        read += load_rows(con, store, "rows", rest, dms=False, symbols=ch.append, batch=batch)
        olds = base.symbols[_isin(base.symbols["symbol"], ch.append)][["symbol", "n"]]
        con.register("olds", olds)
        con.register("tail_rows", base.tail[_isin(base.tail["symbol"], ch.append)][TAIL_COLUMNS])
        con.execute(
            "INSERT INTO delta SELECT symbol, CAST(date AS DATE), open, high, low, close, volume, i FROM tail_rows"
        )
        con.execute(
            "INSERT INTO delta SELECT r.symbol, r.date, r.open, r.high, r.low, r.close, r.volume, r.i + o.n "
            "FROM rows r JOIN olds o USING (symbol)"
        )
    return read


def incremental_pass(
    store: Store,
    base: SilverState,
    ch: Changes,
    sources: pd.DataFrame,
    cursor: str | None,
    ns: tuple[int, ...],
    run_id: str,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> tuple[SilverState | None, dict[int, IntervalResult]]:
    """Recompute the bars of the changed symbols from their first touched bar; rewrite those months whole."""

    new_sources = sources.copy()
    folded = base.sources.set_index(["key", "etag"])["folded"]
    idx = pd.MultiIndex.from_frame(new_sources[["key", "etag"]])
    new_sources["folded"] = folded.reindex(idx).fillna(False).astype(bool).to_numpy()
    if not ch.since:
        same = cursor == base.journal and _same_sources(base.sources, new_sources)
        state = None if same else SilverState(run_id, new_sources, base.symbols, base.tail, base.tail_len, cursor)
        if state is not None:
            state.save(store)
        return state, {n: IntervalResult(n, "unchanged") for n in ns}
    con = connect(store, threads=threads, memory_limit=memory_limit)
    try:
        rows_read = _load_delta(con, store, base, ch, sources)
        meta = pd.DataFrame({"symbol": sorted(ch.since)})
        meta["since"] = [ch.since[s] for s in meta["symbol"]]
        con.register("meta", meta)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE jmeta AS SELECT m.symbol, CAST(m.since AS DATE) AS since, "
            "coalesce(min(d.i) FILTER (WHERE d.date >= m.since), max(d.i) + 1, 0) AS j, "
            "coalesce(max(d.i) + 1, 0) AS n, min(d.date) AS first_date, max(d.date) AS last_date "
            "FROM meta m LEFT JOIN delta d USING (symbol) GROUP BY m.symbol, m.since"
        )
        jm = con.execute("SELECT * FROM jmeta ORDER BY symbol").df()
        old_first = dict(zip(base.symbols["symbol"], base.symbols["first_date"], strict=True))
        old_last = dict(zip(base.symbols["symbol"], base.symbols["last_date"], strict=True))
        jm["old_first"] = pd.Series([_date(old_first.get(s)) for s in jm["symbol"]], dtype=object)
        jm["old_last"] = pd.Series([_date(old_last.get(s)) for s in jm["symbol"]], dtype=object)
        jm["last_date"] = pd.Series([_date(x) for x in jm["last_date"]], dtype=object)
        jm["first_date"] = pd.Series(
            [
                o if s in ch.append else _date(f)
                for s, f, o in zip(jm["symbol"], jm["first_date"], jm["old_first"], strict=True)
            ],
            dtype=object,
        )
        results = {}
        for n in ns:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE cuts AS SELECT m.symbol, (m.j // $n) * $n AS b, "
                "CASE WHEN (m.j // $n) * $n < m.j THEN d.date ELSE m.since END AS cut "
                "FROM jmeta m LEFT JOIN delta d ON d.symbol = m.symbol AND d.i = (m.j // $n) * $n",
                {"n": n},
            )
            results[n] = _rewrite_months(con, store, n, jm)
            results[n].rows_read, results[n].symbols_changed = rows_read, len(jm)
        crash_point("resample.after_silver")
        tail = con.execute(
            "SELECT d.symbol, d.i, d.date, d.open, d.high, d.low, d.close, d.volume FROM delta d "
            "JOIN jmeta m USING (symbol) WHERE d.i >= m.n - $t ORDER BY d.symbol, d.i",
            {"t": base.tail_len},
        ).df()
    finally:
        con.close()
    kept = jm[jm["n"] > 0]
    symbols = pd.concat(
        [base.symbols[~_isin(base.symbols["symbol"], jm["symbol"])], kept[["symbol", "n", "first_date", "last_date"]]]
    ).sort_values("symbol")
    for df, cols in ((symbols, ("first_date", "last_date")), (tail, ("date",))):
        for c in cols:
            df[c] = pd.to_datetime(df[c]).dt.date
    tail = pd.concat([base.tail[~_isin(base.tail["symbol"], jm["symbol"])], tail]).sort_values(["symbol", "i"])
    state = SilverState(
        run_id, new_sources, symbols.reset_index(drop=True), tail.reset_index(drop=True), base.tail_len, cursor
    )
    state.save(store)
    return state, results


def _put_month(store: Store, key: str, data: bytes, etag: str | None) -> None:
    """Rewrite a month file only over the version this run read (or create it only when there was none): a
    second writer (a resample whose lock lease was taken over) makes this run fail instead of mixing months."""
    put_if_unchanged(store, key, data, etag)


def _delete_months(store: Store, versions: dict[str, str]) -> None:
    """Delete month files that hold no bar any more, each only while it has the version this run read."""
    kept = [k for k, e in sorted(versions.items()) if not store.delete_if(k, e)]
    if kept:
        raise PreconditionFailed("another writer changed this silver month during the run", key=kept[0])


def _same_sources(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    def rows(df: pd.DataFrame) -> set[tuple[str, str, bool]]:
        return set(zip(df["key"].astype(str), df["etag"].astype(str), df["folded"].astype(bool), strict=True))

    return len(a) == len(b) and rows(a) == rows(b)


def _rewrite_months(con: duckdb.DuckDBPyConnection, store: Store, n: int, jm: pd.DataFrame) -> IntervalResult:

    cuts = dict(con.execute("SELECT symbol, cut FROM cuts").fetchall())
    months: set[int] = set()
    for sym, first, old_first, last, old_last in zip(
        jm["symbol"], jm["first_date"], jm["old_first"], jm["last_date"], jm["old_last"], strict=True
    ):
        c = cuts.get(sym)
        starts = [d for d in (first, old_first) if isinstance(d, dt.date)]
        ends = [d for d in (last, old_last) if isinstance(d, dt.date)]
        if not starts or not ends:
            continue
        lo = c if c is not None and c > MIN_DATE else min(starts)
        hi = max(ends)
        months.update(range(lo.year * 12 + lo.month - 1, hi.year * 12 + hi.month))
    keys = {m: silver_key(n, m // 12, m % 12 + 1) for m in sorted(months)}
    if len(keys) > 24:
        existing = {o.key: o.etag for o in store.list(silver_prefix(n))}
    else:
        existing = {k: h.etag for k in keys.values() if (h := store.head(k)) is not None}
    etags = {k: existing[k] for k in keys.values() if k in existing}  # the versions read below
    old_keys = list(etags)
    old_sql = (
        f"SELECT {_COLS}, false AS is_new FROM read_parquet($old, union_by_name = true) s "
        "ANTI JOIN cuts c ON s.symbol = c.symbol AND s.date >= c.cut UNION ALL "
        if old_keys
        else ""
    )
    sql = f"{old_sql}SELECT {_COLS}, true AS is_new FROM ({bars_sql('delta', 'n', with_cut=True)})"
    params = {"n": n, **({"old": [store.url(k) for k in old_keys]} if old_keys else {})}
    table = con.execute(sql, params).fetch_arrow_table()
    bars_new = int(pc.sum(table.column("is_new").cast(pa.int64())).as_py() or 0)
    d = table.column("date")
    ym = pc.add(pc.multiply(pc.year(d), 12), pc.subtract(pc.month(d), 1)).cast(pa.int64())
    table = table.append_column("_ym", ym)
    table = table.sort_by([("_ym", "ascending"), ("symbol", "ascending"), ("date", "ascending")])
    ym_sorted = table.column("_ym").to_numpy()
    items, written = [], set()
    for m in np.unique(ym_sorted):
        lo, hi = np.searchsorted(ym_sorted, m, "left"), np.searchsorted(ym_sorted, m, "right")
        key = silver_key(n, int(m) // 12, int(m) % 12 + 1)
        if key not in keys.values():
            raise AssertionError(f"bar outside the planned months: {key}")
        items.append((key, silver_bytes(table.slice(lo, hi - lo))))
        written.add(key)
    for key, data in items:
        _put_month(store, key, data, etags.get(key))
        crash_point("resample.mid_silver")
    emptied = [k for k in old_keys if k not in written]
    _delete_months(store, {k: etags[k] for k in emptied})
    log.info(
        "silver months rewritten interval=%d months=%d bars_new=%d emptied=%d", n, len(items), bars_new, len(emptied)
    )
    return IntervalResult(n, "incremental", bars_written=bars_new, months_rewritten=len(items) + len(emptied))
