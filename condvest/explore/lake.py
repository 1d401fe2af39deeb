"""DuckDB views over the lake, read-only: ``daily`` (bronze bars, one row per symbol and session, the
newest write winning, the legacy DMS export included while it exists), ``silver_<N>d`` per interval, and
``sessions`` (the NYSE calendar's sessions over bronze's span: a symbol's gaps are the sessions of its life
without a bar, never a plain date difference, which would call 9/11, 1968's Wednesdays or Sandy gaps).

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
from condvest.calendar import FIRST_SUPPORTED, is_session, last_n_sessions, previous_session, sessions_between
from condvest.dms import list_dms_files
from condvest.errors import ParameterError
from condvest.explore.params import CheckedExplore, ExploreParams, RelativeStart
from condvest.lake import BRONZE_PREFIX, SILVER_PREFIX, silver_prefix
from condvest.lake_read import connect, load_rows, register_dms
from condvest.settings import Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

_SILVER_DIR = re.compile(r"^silver_(\d+)d$")
_BAR_COLUMNS = ["symbol", "date", "open", "high", "low", "close", "volume", "sessions"]
_SHOWN_SYMBOLS = 12  # an unknown symbol's message lists this many of the lake's symbols


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

    def unknown(self) -> list[str]:
        """The parameter's symbols that have no bar in the lake."""
        return sorted(set(self.params.symbols or ()) - set(self.symbols_in_bronze()))

    def held(self) -> str:
        """The symbols the lake holds, for a message: the first few and the count."""
        held = self.symbols_in_bronze()
        if not held:
            return "the lake holds no symbol yet: run 03_migrate or 01_fetch"
        shown = ", ".join(held[:_SHOWN_SYMBOLS]) + (", …" if len(held) > _SHOWN_SYMBOLS else "")
        return f"the lake holds {len(held)} symbol{'s' if len(held) != 1 else ''}: {shown}"

    def raise_for_status(self) -> None:
        """``ParameterError`` naming the listed symbols that have no bar in the lake (their charts said so), with
        the symbols it holds, raised after the notebook showed everything; nothing else: exploring writes nothing."""
        missing = self.unknown()
        if missing:
            raise ParameterError(
                f"no bar in the lake for {', '.join(missing)} (unknown symbol{'s' if len(missing) > 1 else ''}; "
                f"{self.held()})",
                parameter="symbols",
            )

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
        """``[start, end]`` for ``symbol``: the parameters (a relative start counted back from end), or its last
        year of daily bars."""
        last = self.con.execute("SELECT max(date) FROM daily WHERE symbol = $s", {"s": symbol}).fetchone()[0]
        if last is None:
            return None
        end = self.end or last
        if isinstance(self.start, RelativeStart):
            start = self.start.before(end)
        else:
            start = self.start or (end - dt.timedelta(days=365))
        return start, end

    def sessions(self, symbol: str) -> pd.DataFrame:
        """The NYSE sessions of ``symbol``'s life (its first to its last bar, within ``start``/``end`` when given),
        each with ``bar`` true when bronze holds one."""
        symbol = params.symbol(symbol, "symbols")
        first, last = self.con.execute(
            "SELECT min(date), max(date) FROM daily WHERE symbol = $s", {"s": symbol}
        ).fetchone()
        if first is None:
            return pd.DataFrame({"date": pd.Series(dtype=object), "bar": pd.Series(dtype=bool)})
        if isinstance(self.start, dt.date):
            first = max(first, self.start)
        if self.end is not None:
            last = min(last, self.end)
        days = sessions_between(max(first, FIRST_SUPPORTED), last) if first <= last else []
        held = {
            r[0]
            for r in self.con.execute(
                "SELECT date FROM daily WHERE symbol = $s AND date BETWEEN $a AND $b",
                {"s": symbol, "a": first, "b": last},
            ).fetchall()
        }
        return pd.DataFrame({"date": days, "bar": [d in held for d in days]})

    def gaps(self, symbol: str | None = None) -> pd.DataFrame:
        """``symbol``'s gaps (default: every chosen symbol's) against the NYSE calendar: runs of sessions of its
        life without a bar (first, last, sessions missing); no row means none. Closed days (weekends, holidays,
        9/11, the 1968 Wednesdays, Sandy) are never gaps."""
        cols = ["symbol", "first", "last", "sessions"]
        chosen = [symbol] if symbol else [s for s in self.symbols if s not in self.unknown()]
        frames = []
        for sym in chosen:
            days = self.sessions(sym)
            missing = days[~days["bar"]].reset_index()
            if missing.empty:
                continue
            run = (missing["index"].diff() != 1).cumsum()
            out = missing.groupby(run).agg(first=("date", "min"), last=("date", "max"), sessions=("date", "size"))
            out.insert(0, "symbol", sym)
            frames.append(out)
        return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def cross_section(self, over: int | None = None, on: dt.date | None = None) -> pd.DataFrame:
        """Every symbol's return over the trailing ``over`` NYSE sessions ending ``on`` (defaults: the parameters;
        ``on``: the latest session in bronze), aligned on the calendar: close on ``on`` over close ``over``
        sessions before, best first; a symbol without a bar on either day is listed last, with the reason.

        Not from silver: silver bars are phased per symbol (bar k spans sessions k·N … k·N+N−1 counted from each
        symbol's own first session), so two symbols' ``silver_21d`` bars cover different days."""
        over = self.params.returns_over if over is None else params.count(over, "returns_over", 1, 10_000)
        on = on or self.params.returns_on or self.con.execute("SELECT max(date) FROM daily").fetchone()[0]
        cols = ["symbol", "from", "to", "close_from", "close_to", "return", "note"]
        if on is None:
            return pd.DataFrame(columns=cols)
        if not is_session(on):
            raise ParameterError(
                f"returns_on {on} is not an NYSE session (the one before is {previous_session(on)})",
                parameter="returns_on",
            )
        base = last_n_sessions(on, over + 1)[0]
        df = self.con.execute(
            "SELECT s.symbol, a.close AS close_from, b.close AS close_to "
            "FROM (SELECT DISTINCT symbol FROM daily) s "
            "LEFT JOIN daily a ON a.symbol = s.symbol AND a.date = $a "
            "LEFT JOIN daily b ON b.symbol = s.symbol AND b.date = $b ORDER BY s.symbol",
            {"a": base, "b": on},
        ).df()
        df.insert(1, "from", base)
        df.insert(2, "to", on)
        df["return"] = df["close_to"] / df["close_from"] - 1
        df["note"] = ""
        df.loc[df["close_from"].isna(), "note"] = f"no bar on {base}"
        df.loc[df["close_to"].isna(), "note"] = f"no bar on {on}"
        df.loc[df["close_from"].isna() & df["close_to"].isna(), "note"] = f"no bar on {base} nor {on}"
        return df.sort_values(["return", "symbol"], ascending=[False, True], na_position="last")[cols].reset_index(
            drop=True
        )

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


def _create_sessions(con: duckdb.DuckDBPyConnection) -> None:
    """The table ``sessions(date)``: the NYSE calendar's sessions from bronze's first bar to its last."""
    first, last = con.execute("SELECT min(date), max(date) FROM daily").fetchone()
    days = sessions_between(max(first, FIRST_SUPPORTED), last) if first is not None else []
    con.register("session_days", pd.DataFrame({"date": pd.to_datetime(pd.Series(days, dtype=object))}))
    con.execute("CREATE TABLE sessions AS SELECT CAST(date AS DATE) AS date FROM session_days")
    con.unregister("session_days")


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
        _create_sessions(con)
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
