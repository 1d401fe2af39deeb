"""DuckDB views over the lake, read-only: ``daily`` (bronze bars, one row per symbol and session, the
newest write winning, the legacy DMS export included while it exists) and ``silver_<N>d`` per interval.

Nothing is written: bronze is read into an in-memory table, silver files are read where they lie.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import duckdb
import pandas as pd

from condvest import params
from condvest.dms import list_dms_files
from condvest.errors import ParameterError
from condvest.explore.params import CheckedExplore, ExploreParams
from condvest.lake import BRONZE_PREFIX, SILVER_PREFIX, silver_prefix
from condvest.lake_read import connect, load_rows, register_dms
from condvest.settings import Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

_SILVER_DIR = re.compile(r"^silver_(\d+)d$")
_BAR_COLUMNS = ["symbol", "date", "open", "high", "low", "close", "volume", "sessions"]


class LakeViews:
    """An in-memory DuckDB connection holding the lake's views; ``close()`` it (or use ``with``)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, intervals: tuple[int, ...], p: ExploreParams | CheckedExplore
    ) -> None:
        self.con = con
        self.intervals = intervals
        self.params = p if isinstance(p, CheckedExplore) else p.check()
        symbols, self.interval, self.start, self.end = (
            self.params.symbols,
            self.params.interval,
            self.params.start,
            self.params.end,
        )
        first = self.symbols_in_bronze()[:1]
        self.symbols: tuple[str, ...] = symbols or tuple(first)

    def __enter__(self) -> LakeViews:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def view_name(self, interval: int) -> str:
        """``daily`` for 1, ``silver_<N>d`` for a resampled interval present in the lake."""
        interval = params.interval(interval, "interval")
        if interval == 1:
            return "daily"
        if interval not in self.intervals:
            known = ", ".join(str(n) for n in self.intervals) or "none yet (run 02_resample)"
            raise ParameterError(f"no silver bars of {interval} sessions (present: {known})", parameter="interval")
        return f"silver_{interval}d"

    def sql(self, query: str, parameters: dict[str, Any] | None = None) -> pd.DataFrame:
        """Your own query over ``daily`` and the ``silver_<N>d`` views (bind values as ``$name``)."""
        return self.con.execute(query, parameters or {}).df()

    def symbols_in_bronze(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT symbol FROM daily ORDER BY symbol").fetchall()]

    def raise_for_status(self) -> None:
        """``ParameterError`` naming the listed symbols that have no bar in the lake (their charts were empty),
        raised after the notebook showed everything; nothing else to raise: exploring writes nothing."""
        missing = sorted(set(self.params.symbols or ()) - set(self.symbols_in_bronze()))
        if missing:
            raise ParameterError(f"no bar in the lake for {', '.join(missing)}", parameter="symbols")

    def views(self) -> pd.DataFrame:
        """The views with their rows, symbols and first/last bar: the lake's shape per interval."""
        rows = []
        for n in (1, *self.intervals):
            name = self.view_name(n)
            count, symbols, first, last = self.con.execute(
                f"SELECT count(*), count(DISTINCT symbol), min(date), max(date) FROM {name}"
            ).fetchone()
            rows.append((name, n, count, symbols, first, last))
        return pd.DataFrame(rows, columns=["view", "sessions per bar", "rows", "symbols", "first", "last"])

    def symbols_per_year(self) -> pd.DataFrame:
        """Bronze: per year, the symbols that have bars and the rows."""
        return self.con.execute(
            "SELECT year(date) AS year, count(DISTINCT symbol) AS symbols, count(*) AS rows "
            "FROM daily GROUP BY 1 ORDER BY 1"
        ).df()

    def window(self, symbol: str) -> tuple[dt.date, dt.date] | None:
        """``[start, end]`` for ``symbol``: the parameters, or its last year of daily bars."""
        last = self.con.execute("SELECT max(date) FROM daily WHERE symbol = $s", {"s": symbol}).fetchone()[0]
        if last is None:
            return None
        end = self.end or last
        start = self.start or (end - dt.timedelta(days=365))
        return start, end

    def bars(self, symbol: str, interval: int | None = None) -> pd.DataFrame:
        """One symbol's bars of ``interval`` (default: the parameter's) whose first session is in the window."""
        symbol = params.symbol(symbol, "symbols")
        name = self.view_name(self.interval if interval is None else interval)
        window = self.window(symbol)
        if window is None:
            return pd.DataFrame(columns=_BAR_COLUMNS)
        sessions = "1" if name == "daily" else "sessions"
        return self.con.execute(
            f"SELECT symbol, date, open, high, low, close, volume, {sessions} AS sessions FROM {name} "
            "WHERE symbol = $s AND date BETWEEN $a AND $b ORDER BY date",
            {"s": symbol, "a": window[0], "b": window[1]},
        ).df()


def silver_intervals(store: Store) -> tuple[int, ...]:
    """The intervals that have a folder under ``silver/``."""
    found = set()
    for o in store.list(f"{SILVER_PREFIX}/silver_"):
        m = _SILVER_DIR.match(o.key[len(SILVER_PREFIX) + 1 :].split("/")[0])
        if m:
            found.add(int(m.group(1)))
    return tuple(sorted(found))


def open_lake(settings: Settings, p: ExploreParams | None = None, *, store: Store | None = None) -> LakeViews:
    """Check the parameters, then read bronze into ``daily`` and define a ``silver_<N>d`` view per interval."""
    c = (p or ExploreParams()).check()
    store = store or open_store(settings=settings)
    con = connect(store)
    try:
        keys = [o.key for o in store.list(f"{BRONZE_PREFIX}/symbol=")]
        dms = [o.key for o in list_dms_files(store)]
        if dms:
            register_dms(con, store, dms, None)
        load_rows(con, store, "rows", keys, dms=bool(dms))
        con.execute("CREATE VIEW daily AS SELECT symbol, date, open, high, low, close, volume FROM rows")
        intervals = silver_intervals(store)
        for n in intervals:
            files = [store.url(o.key) for o in store.list(silver_prefix(n)) if o.key.endswith(".parquet")]
            if files:
                con.read_parquet(files, union_by_name=True).create_view(f"silver_{n}d")
            else:
                intervals = tuple(i for i in intervals if i != n)
        log.info(
            "explore lake=%s bronze_objects=%d dms_files=%d intervals=%s", store.uri, len(keys), len(dms), intervals
        )
        return LakeViews(con, intervals, c)
    except BaseException:
        con.close()
        raise
