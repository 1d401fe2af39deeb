"""06_explore's parameters, checked once (pure, no I/O): ``ExploreParams(...).check() -> CheckedExplore`` or
``ParameterError`` naming the parameter."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from condvest import params
from condvest.errors import ParameterError

__all__ = ["CheckedExplore", "ExploreParams"]


@dataclass(frozen=True)
class ExploreParams:
    """06_explore's parameters. ``symbols``: a comma list, or "" for the first symbol in bronze; ``interval``:
    bar length in sessions (1 = bronze daily bars, else a silver interval); ``start``/``end``: ISO dates, or
    ``None`` for the symbol's last year of bars; ``compare``: the intervals shown side by side."""

    symbols: str = ""
    interval: int = 5
    start: str | dt.date | None = None
    end: str | dt.date | None = None
    compare: str = "1,5,21"

    def check(self) -> CheckedExplore:
        """Every parameter checked before the lake is read."""
        symbols = params.symbol_list(self.symbols) if str(self.symbols).strip() else None
        interval = params.interval(self.interval, "interval")
        a, b = params.iso_date(self.start, "start"), params.iso_date(self.end, "end")
        if a is not None and b is not None and b < a:
            raise ParameterError(f"end {b} is before start {a}", parameter="end")
        return CheckedExplore(symbols, interval, a, b, params.intervals(self.compare, "compare"))


@dataclass(frozen=True)
class CheckedExplore:
    """``ExploreParams`` parsed: ``symbols`` sorted (``None``: the first symbol in bronze), dates as dates,
    ``compare`` as sorted unique intervals."""

    symbols: tuple[str, ...] | None
    interval: int
    start: dt.date | None
    end: dt.date | None
    compare: tuple[int, ...] = (1, 5, 21)
