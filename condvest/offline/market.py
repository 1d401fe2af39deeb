"""A deterministic synthetic US-equities market: the offline stand-in for Polygon's daily bars.

Every bar is a pure function of (seed, symbol, session): a smooth symbol-specific trend times
multi-scale "value noise" (hash values at knots interpolated between them) times a daily hash noise.
Nothing is accumulated over time, so one bar costs O(1) and any slice of history is vectorised.

Only integer hashing (splitmix64 in uint64) and IEEE ``+ - * /`` are used (no ``exp``/``log``/``sin``,
whose SIMD implementations differ between CPUs), and prices are built as integers in units of
$0.0001 before they become floats, so bars are bit-identical on every machine and in every host time
zone, and ``low <= min(open, close) <= max(open, close) <= high`` holds exactly.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from condvest.calendar import FIRST_SUPPORTED, ny_close_epoch_ms, ny_midnight_epoch_ms, sessions_between
from condvest.errors import ParameterError

log = logging.getLogger(__name__)

__all__ = ["Split", "SyntheticMarket"]

_LAST_DAY = dt.date(2099, 12, 31)
_T0 = dt.date(1962, 1, 1).toordinal()
_EPOCH = dt.date(1970, 1, 1).toordinal()
_U64 = np.uint64
_MASK = 0xFFFFFFFFFFFFFFFF
_M1, _M2, _GOLD = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB), _U64(0x9E3779B97F4A7C15)
_SQRT3 = 1.7320508075688772
# value-noise scales (calendar days) and amplitudes of the price path
_SCALES = ((7, 0.02), (29, 0.05), (97, 0.10), (331, 0.16), (1201, 0.24))
_VOL_SCALE = 61
# price levels (at the horizon) and typical volumes; literals, so nothing depends on libm
_PRICES = (1.5, 2.5, 4.0, 6.0, 9.0, 12.0, 16.0, 22.0, 30.0, 40.0, 55.0, 75.0, 100.0, 140.0, 200.0, 320.0, 550.0)
_PENNY = (0.08, 0.15, 0.25, 0.4, 0.6, 0.85)
_VOLUMES = (3e3, 2e4, 8e4, 3e5, 1e6, 3e6, 1e7, 4e7)
_STREAM = {"ticker": 1, "param": 2, "daily": 3, "gap": 4, "hl": 5, "vol": 6, "volnoise": 7, "name": 8}


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on a uint64 array (wraps modulo 2**64)."""
    x = x + _GOLD
    x ^= x >> _U64(30)
    x *= _M1
    x ^= x >> _U64(27)
    x *= _M2
    x ^= x >> _U64(31)
    return x


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 bits of a hash."""
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _irwin_hall(h: np.ndarray) -> np.ndarray:
    """Approximately standard normal from four 16-bit fields of a hash (range +-3.46)."""
    m = _U64(0xFFFF)
    s = (h & m) + ((h >> _U64(16)) & m) + ((h >> _U64(32)) & m) + (h >> _U64(48))
    return (s.astype(np.float64) * (1.0 / 65536.0) - 2.0) * _SQRT3


@lru_cache(maxsize=1)
def _sessions() -> tuple[np.ndarray, np.ndarray, tuple[dt.date, ...]]:
    """Ordinals of every NYSE session, the ordinal of the session before each, and the dates."""
    days = tuple(sessions_between(FIRST_SUPPORTED, _LAST_DAY))
    ords = np.fromiter((d.toordinal() for d in days), dtype=np.int64, count=len(days))
    prev = np.concatenate([[ords[0] - 3], ords[:-1]])
    return ords, prev, days


def _session_index(day: dt.date) -> int | None:
    ords = _sessions()[0]
    i = int(np.searchsorted(ords, day.toordinal()))
    return i if i < len(ords) and ords[i] == day.toordinal() else None


@dataclass(frozen=True)
class Split:
    """A split of ``symbol`` executed before the open of ``execution_date``: ``split_from`` old shares become
    ``split_to`` new ones (2-for-1: from 1 to 2; a 1-for-10 reverse split: from 10 to 1)."""

    symbol: str
    execution_date: dt.date
    split_from: float
    split_to: float

    @property
    def price_factor(self) -> float:
        """What a price before the split is multiplied by to be on the basis after it."""
        return self.split_from / self.split_to


class SyntheticMarket:
    """Deterministic daily bars for ``n_symbols`` tickers on NYSE sessions.

    ``full_history_share`` of the symbols list on ``first_date``; the others list ``age`` years before
    ``horizon`` with ``age = span * u / (1 + listing_skew * (1 - u))`` (u uniform), so a larger
    ``listing_skew`` means shorter histories. ``SyntheticMarket.lake_like()`` calibrates it to the real
    lake's size (5,350 symbols, about 10.8M rows to 2025-10-31). Bars also exist after ``horizon``.

    ``splits`` (none by default) change the traded prices from their execution date on: the bars of a
    session as they traded (``as_of=None``, unadjusted) are the price path times the factors of the
    symbol's splits executed on or before it; ``as_of=D`` gives them split-adjusted as Polygon's
    ``adjusted=true`` does on day D (every split executed on or before D applied; volumes inversely).
    """

    def __init__(
        self,
        n_symbols: int = 50,
        seed: int = 7,
        first_date: dt.date = dt.date(1962, 1, 2),
        *,
        full_history_share: float = 0.2,
        listing_skew: float = 3.0,
        horizon: dt.date = dt.date(2025, 10, 31),
        splits: Sequence[Split] = (),
    ) -> None:
        if n_symbols <= 0:
            raise ParameterError(f"n_symbols must be positive, got {n_symbols}", parameter="n_symbols")
        if not 0.0 <= full_history_share <= 1.0 or listing_skew < 0:
            raise ParameterError("full_history_share must be in [0, 1] and listing_skew >= 0", parameter="listing")
        if not FIRST_SUPPORTED <= first_date < horizon:
            raise ParameterError(
                f"first_date {first_date} must be in [{FIRST_SUPPORTED}, horizon)", parameter="first_date"
            )
        self.n_symbols, self.seed, self.first_date, self.horizon = n_symbols, seed, first_date, horizon
        self.full_history_share, self.listing_skew = full_history_share, listing_skew
        self._pre_cache: dict[tuple[str, int], np.ndarray] = {}
        self._seed_int = int(_mix(np.array([seed & _MASK], dtype=np.uint64))[0])
        gen_ids = self._tickers(n_symbols)
        order = sorted(range(n_symbols), key=lambda i: gen_ids[i][0])
        self.symbols: list[str] = [gen_ids[i][0] for i in order]
        self._keys = np.array([gen_ids[i][1] for i in order], dtype=np.uint64)
        self._pos = {s: i for i, s in enumerate(self.symbols)}
        self._params()
        self._list_idx = self._listing_indexes(full_history_share, listing_skew)
        self.splits: tuple[Split, ...] = tuple(sorted(splits, key=lambda x: (x.execution_date, x.symbol)))
        self._splits_of: dict[int, list[tuple[int, float]]] = {}
        for sp in self.splits:
            if not (sp.split_from > 0 and sp.split_to > 0):
                raise ParameterError(f"split ratios must be positive: {sp}", parameter="splits")
            self._splits_of.setdefault(self._index(sp.symbol), []).append(
                (sp.execution_date.toordinal(), sp.price_factor)
            )

    # -- construction -------------------------------------------------------------------------------

    def _salt(self, stream: str, extra: int = 0) -> np.uint64:
        return _U64((self._seed_int + _STREAM[stream] * 0x1000193 + extra * 0x9E37) & _MASK)

    def _pre(self, stream: str, extra: int = 0) -> np.ndarray:
        """The first mixing round of every symbol's key for a stream (cached: it is per symbol, not per row)."""
        key = (stream, extra)
        if key not in self._pre_cache:
            self._pre_cache[key] = _mix(self._keys ^ self._salt(stream, extra))
        return self._pre_cache[key]

    def _row_hash(self, stream: str, s: np.ndarray, t: np.ndarray, extra: int = 0) -> np.ndarray:
        """``_hash(stream, keys[s], t)``, with the per-symbol round computed once."""
        return _mix(self._pre(stream, extra)[s] + t.astype(np.uint64))

    def _hash(self, stream: str, a: np.ndarray, b: np.ndarray | int = 0) -> np.ndarray:
        pre = _mix(np.asarray(a, dtype=np.uint64) ^ self._salt(stream))
        return _mix(pre + np.asarray(b, dtype=np.int64).astype(np.uint64))

    def _tickers(self, n: int) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        seen: set[str] = set()
        start = 0
        while len(out) < n:
            ids = np.arange(start, start + 2 * n + 64, dtype=np.uint64)
            hs = self._hash("ticker", ids)
            for gid, h in zip(ids.tolist(), hs.tolist(), strict=True):
                r = h % 1000
                length = 1 if r < 8 else 2 if r < 80 else 3 if r < 480 else 4 if r < 940 else 5
                h //= 1000
                letters = []
                for _ in range(length):
                    letters.append(chr(65 + h % 26))
                    h //= 26
                ticker = "".join(letters)
                if length in (3, 4) and h % 60 == 0:
                    ticker += "." + "AB"[(h // 60) % 2]
                if ticker not in seen:
                    seen.add(ticker)
                    out.append((ticker, gid))
                    if len(out) == n:
                        break
            start += 2 * n + 64
        return out

    def _params(self) -> None:
        k = self._keys
        h0, h1, h2 = (self._hash("param", k, j) for j in range(3))
        penny = (h0 % _U64(100)) < _U64(5)
        lvl = np.where(
            penny,
            np.array(_PENNY)[(h1 % _U64(len(_PENNY))).astype(np.int64)],
            np.array(_PRICES)[(h1 % _U64(len(_PRICES))).astype(np.int64)],
        )
        lvl = lvl * (0.85 + 0.3 * _unit(h2))
        u = [_unit(self._hash("param", k, j)) for j in range(3, 10)]
        self._g = np.where(penny, 0.0, 0.16 * u[0])
        self._h = np.where(penny, 0.0, 0.35 * u[1] * u[1])
        x_h = (self.horizon.toordinal() - _T0) / 365.25
        self._base = lvl / self._trend(np.arange(len(k)), np.full(len(k), x_h))
        self._sigma = 0.006 + 0.022 * u[2]
        self._volf = 0.5 + u[3]
        self._vbase = np.array(_VOLUMES)[(h0 // _U64(100) % _U64(len(_VOLUMES))).astype(np.int64)] * (0.5 + u[4])
        self._tsize = (40 + (u[5] * 400.0)).astype(np.int64)
        self._listing_u, self._full_u = u[6], _unit(self._hash("param", k, 10))

    def _listing_indexes(self, share: float, skew: float) -> np.ndarray:
        ords = _sessions()[0]
        first, hz = self.first_date.toordinal(), self.horizon.toordinal()
        age = (hz - first) * self._listing_u / (1.0 + skew * (1.0 - self._listing_u))
        day = np.where(self._full_u < share, first, hz - np.floor(age).astype(np.int64))
        return np.searchsorted(ords, np.maximum(day, first)).astype(np.int64)

    @classmethod
    def lake_like(
        cls,
        n_symbols: int = 5350,
        seed: int = 7,
        rows: int = 10_800_000,
        *,
        full_history_share: float = 0.03,
        horizon: dt.date = dt.date(2025, 10, 31),
    ) -> SyntheticMarket:
        """A market whose history from 1962-01-02 to ``horizon`` holds about ``rows`` bars."""
        m = cls(n_symbols, seed, full_history_share=full_history_share, horizon=horizon)
        lo, hi = 0.0, 1e4
        for _ in range(60):  # bisection on listing_skew: more skew, fewer rows
            mid = (lo + hi) / 2
            m._list_idx = m._listing_indexes(full_history_share, mid)
            if m.expected_rows(m.first_date, horizon) > rows:
                lo = mid
            else:
                hi = mid
        m.listing_skew = hi
        m._list_idx = m._listing_indexes(full_history_share, hi)
        log.info("lake_like n_symbols=%d skew=%.4f rows=%d", n_symbols, hi, m.expected_rows(m.first_date, horizon))
        return m

    # -- the price path -----------------------------------------------------------------------------

    def _trend(self, s: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = 1.0 + self._g[s] * x
        return a * a / (1.0 + self._h[s] * x)

    def _noise(self, stream: str, s: np.ndarray, t: np.ndarray, scale: int) -> np.ndarray:
        """Smooth value noise in [-1, 1] with knots every ``scale`` calendar days."""
        k0 = t // scale
        fr = (t - k0 * scale) / scale
        w = fr * fr * (3.0 - 2.0 * fr)
        a = _unit(self._row_hash(stream, s, k0, scale))
        b = _unit(self._row_hash(stream, s, k0 + 1, scale))
        return 2.0 * (a + (b - a) * w) - 1.0

    def _close_units(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The closing price of symbol positions ``s`` on day ordinals ``t``, in units of $0.0001."""
        p = self._base[s] * self._trend(s, (t - _T0) / 365.25)
        volf = self._volf[s]
        for scale, amp in _SCALES:
            p = p * (1.0 + amp * volf * self._noise("daily", s, t, scale))
        p = p * (1.0 + self._sigma[s] * _irwin_hall(self._row_hash("daily", s, t)))
        return np.maximum(np.rint(p * 10000.0), 1.0).astype(np.int64)

    def _factors(self, s: np.ndarray, t: np.ndarray, as_of: dt.date | None) -> np.ndarray | None:
        """Per row the price factor of the symbol's splits executed on or before max(t, as_of); None: all 1."""
        if not self._splits_of:
            return None
        upto = t if as_of is None else np.maximum(t, as_of.toordinal())
        f = np.ones(len(s), dtype=np.float64)
        for pos, items in self._splits_of.items():
            mine = s == pos
            if not mine.any():
                continue
            for ex, factor in items:
                f = np.where(mine & (upto >= ex), f * factor, f)
        return f

    def _bars(self, s: np.ndarray, k: np.ndarray, as_of: dt.date | None = None) -> dict[str, np.ndarray]:
        """Bars of symbol positions ``s`` on session indexes ``k`` (elementwise), traded or adjusted as of a day."""
        ords, prev, _ = _sessions()
        t = ords[k]
        c = self._close_units(s, t)
        # the open follows the previous session's close; reuse it where the previous row is that session
        pc = np.empty_like(c)
        follows = np.zeros(len(k), dtype=bool)
        follows[1:] = (s[1:] == s[:-1]) & (k[1:] == k[:-1] + 1)
        pc[1:][follows[1:]] = c[:-1][follows[1:]]
        rest = ~follows
        pc[rest] = self._close_units(s[rest], prev[k[rest]])
        sig = self._sigma[s]
        o = np.maximum(np.rint(pc * (1.0 + 0.3 * sig * _irwin_hall(self._row_hash("gap", s, t)))), 1.0)
        o = o.astype(np.int64)
        hl = self._row_hash("hl", s, t)
        m16 = _U64(0xFFFF)
        uh = (hl & m16).astype(np.float64) * (1.0 / 65536.0)
        ul = ((hl >> _U64(16)) & m16).astype(np.float64) * (1.0 / 65536.0)
        wv = ((hl >> _U64(32)) % _U64(601)).astype(np.int64) + 200
        mx, mn = np.maximum(o, c), np.minimum(o, c)
        h = mx + np.floor(mx * sig * 1.3 * uh).astype(np.int64)
        lo = np.maximum(mn - np.floor(mn * sig * 1.3 * ul).astype(np.int64), 1)
        vw = lo + (h - lo) * wv // 1000
        hv = self._row_hash("vol", s, t)
        x = (t - _T0) / 365.25
        vol = self._vbase[s] * (0.15 + 0.85 * np.minimum(x / 64.0, 1.0))
        vol = vol * (1.0 + 0.6 * self._noise("volnoise", s, t, _VOL_SCALE)) * (0.4 + 1.2 * _unit(hv))
        vol = np.where((hv & _U64(63)) == _U64(0), vol * 3.0, vol)
        vi = np.floor(vol).astype(np.int64) + 1
        frac = ((hv >> _U64(8)) % _U64(50)) == _U64(0)
        cents = ((hv >> _U64(16)) % _U64(99)).astype(np.int64) + 1
        v = np.where(frac, vi + cents / 100.0, vi.astype(np.float64))
        n = np.maximum(vi // self._tsize[s], 1)
        out = {
            "o": o / 10000.0,
            "h": h / 10000.0,
            "l": lo / 10000.0,
            "c": c / 10000.0,
            "v": v,
            "vw": vw / 10000.0,
            "n": n,
            "ord": t,
        }
        f = self._factors(s, t, as_of)
        if f is not None:
            for col in ("o", "h", "l", "c", "vw"):
                out[col] = out[col] * f
            out["v"] = out["v"] / f
        return out

    # -- public API ---------------------------------------------------------------------------------

    def listing_date(self, symbol: str) -> dt.date:
        """The symbol's first session."""
        return _sessions()[2][int(self._list_idx[self._index(symbol)])]

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self._pos

    def _index(self, symbol: str) -> int:
        try:
            return self._pos[symbol]
        except KeyError:
            raise ParameterError(f"unknown symbol {symbol!r}", parameter="symbols") from None

    def _session_range(self, start: dt.date, end: dt.date) -> tuple[int, int]:
        if end < start:
            raise ParameterError(f"end {end} is before start {start}", parameter="end")
        ords = _sessions()[0]
        return (
            int(np.searchsorted(ords, start.toordinal())),
            int(np.searchsorted(ords, end.toordinal(), side="right")),
        )

    def expected_rows(self, start: dt.date, end: dt.date) -> int:
        """How many bars ``frame(start, end)`` returns, computed without generating them."""
        a, b = self._session_range(start, end)
        return int(np.maximum(b - np.maximum(self._list_idx, a), 0).sum())

    def splits_of(self, symbol: str) -> list[Split]:
        return [sp for sp in self.splits if sp.symbol == symbol]

    def grouped(self, day: dt.date, as_of: dt.date | None = None) -> list[dict]:
        """Polygon grouped-daily results for ``day`` (``t`` = 16:00 New York); empty on a non-session.
        ``as_of``: split-adjusted as of that day (None: as traded)."""
        k = _session_index(day)
        if k is None:
            return []
        s = np.flatnonzero(self._list_idx <= k)
        b = self._bars(s, np.full(len(s), k, dtype=np.int64), as_of)
        t = ny_close_epoch_ms(day)
        return [
            {"T": self.symbols[i], "v": _num(v), "vw": vw, "o": o, "c": c, "h": h, "l": lo, "t": t, "n": n}
            for i, v, vw, o, c, h, lo, n in zip(
                s.tolist(),
                b["v"].tolist(),
                b["vw"].tolist(),
                b["o"].tolist(),
                b["c"].tolist(),
                b["h"].tolist(),
                b["l"].tolist(),
                b["n"].tolist(),
                strict=True,
            )
        ]

    def range_bars(self, symbol: str, start: dt.date, end: dt.date, as_of: dt.date | None = None) -> list[dict]:
        """Polygon range results (``t`` = 00:00 New York) of ``symbol`` on sessions in [start, end]
        (``as_of``: split-adjusted as of that day; None: as traded)."""
        i = self._index(symbol)
        a, b = self._session_range(start, end)
        a = max(a, int(self._list_idx[i]))
        if a >= b:
            return []
        k = np.arange(a, b, dtype=np.int64)
        bars = self._bars(np.full(len(k), i, dtype=np.int64), k, as_of)
        days = _sessions()[2]
        return [
            {"v": _num(v), "vw": vw, "o": o, "c": c, "h": h, "l": lo, "t": ny_midnight_epoch_ms(days[kk]), "n": n}
            for kk, v, vw, o, c, h, lo, n in zip(
                k.tolist(),
                bars["v"].tolist(),
                bars["vw"].tolist(),
                bars["o"].tolist(),
                bars["c"].tolist(),
                bars["h"].tolist(),
                bars["l"].tolist(),
                bars["n"].tolist(),
                strict=True,
            )
        ]

    def iter_tables(
        self,
        start: dt.date,
        end: dt.date,
        symbols: Sequence[str] | None = None,
        *,
        chunk_rows: int = 1_000_000,
        as_of: dt.date | None = None,
    ) -> Iterator[pa.Table]:
        """pyarrow tables of ~``chunk_rows`` bars each, whole symbols per chunk, ordered by (symbol, date);
        as traded, or split-adjusted as of ``as_of``.

        Columns: symbol (string), date (date32), open, high, low, close, volume, vwap (float64),
        transactions (int64).
        """
        a, b = self._session_range(start, end)
        pos = np.arange(self.n_symbols) if symbols is None else np.array(sorted({self._index(x) for x in symbols}))
        pos = pos.astype(np.int64)
        lo = np.maximum(self._list_idx[pos], a)
        counts = np.maximum(b - lo, 0)
        dictionary = pa.array(self.symbols, type=pa.string())
        i = 0
        while i < len(pos):
            j, rows = i, 0
            while j < len(pos) and (rows == 0 or rows + counts[j] <= chunk_rows):
                rows += int(counts[j])
                j += 1
            if rows:
                cnt = counts[i:j]
                s = np.repeat(pos[i:j], cnt)
                starts = np.repeat(lo[i:j] - (np.cumsum(cnt) - cnt), cnt)
                k = np.arange(rows, dtype=np.int64) + starts
                yield self._table(s, k, dictionary, as_of)
            i = j

    def _table(self, s: np.ndarray, k: np.ndarray, dictionary: pa.Array, as_of: dt.date | None = None) -> pa.Table:
        bars = self._bars(s, k, as_of)
        sym = pa.DictionaryArray.from_arrays(pa.array(s.astype(np.int32)), dictionary).cast(pa.string())
        date = pa.array((bars["ord"] - _EPOCH).astype(np.int32)).view(pa.date32())
        return pa.table(
            {
                "symbol": sym,
                "date": date,
                "open": bars["o"],
                "high": bars["h"],
                "low": bars["l"],
                "close": bars["c"],
                "volume": bars["v"],
                "vwap": bars["vw"],
                "transactions": bars["n"],
            }
        )

    def iter_frames(
        self,
        start: dt.date,
        end: dt.date,
        symbols: Sequence[str] | None = None,
        *,
        chunk_rows: int = 1_000_000,
        as_of: dt.date | None = None,
    ) -> Iterator[pd.DataFrame]:
        """``frame`` in chunks of whole symbols (about ``chunk_rows`` rows each)."""
        for table in self.iter_tables(start, end, symbols, chunk_rows=chunk_rows, as_of=as_of):
            yield _to_pandas(table)

    def frame(
        self, start: dt.date, end: dt.date, symbols: Sequence[str] | None = None, *, as_of: dt.date | None = None
    ) -> pd.DataFrame:
        """Every bar in [start, end] as a DataFrame ordered by (symbol, date); ``date`` is date32. As traded,
        or split-adjusted as of ``as_of``."""
        tables = list(self.iter_tables(start, end, symbols, chunk_rows=2_000_000, as_of=as_of))
        if not tables:
            return _to_pandas(self._table(np.zeros(0, np.int64), np.zeros(0, np.int64), pa.array([], pa.string())))
        return _to_pandas(pa.concat_tables(tables))


def _num(v: float) -> int | float:
    """Polygon writes whole volumes without a fraction."""
    return int(v) if v.is_integer() else v


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper={pa.date32(): pd.ArrowDtype(pa.date32())}.get)
