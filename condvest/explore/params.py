"""06_explore's parameters, checked once (pure, no I/O): ``ExploreParams(...).check() -> CheckedExplore`` or
``ParameterError`` naming the parameter."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pandas as pd

from condvest import params
from condvest.errors import ParameterError

__all__ = ["CheckedExplore", "ExploreParams", "RelativeStart", "relative_start"]

_RELATIVE = re.compile(r"^-(\d{1,4})([DWMY])$")
_UNITS = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}


@dataclass(frozen=True)
class RelativeStart:
    """A start given back from the window's end: ``-3M`` is three calendar months before it."""

    count: int
    unit: str  # D, W, M or Y

    def before(self, end: dt.date) -> dt.date:
        return (pd.Timestamp(end) - pd.DateOffset(**{_UNITS[self.unit]: self.count})).date()

    def __str__(self) -> str:
        return f"-{self.count}{self.unit}"


def relative_start(value: object, name: str = "start") -> dt.date | RelativeStart | None:
    """``start``: an ISO date, a period back from ``end`` (``-10D``, ``-6W``, ``-3M``, ``-2Y``), or unset."""
    rule = (
        f"expected an ISO date YYYY-MM-DD or a period back from end such as -3M (D days, W weeks, M months, "
        f"Y years), got {value!r}"
    )
    if isinstance(value, str) and value.strip().startswith("-"):
        m = _RELATIVE.match(value.strip().upper())
        if not m or int(m.group(1)) == 0:
            raise ParameterError(rule, parameter=name)
        return RelativeStart(int(m.group(1)), m.group(2))
    if isinstance(value, str) and _RELATIVE.match("-" + value.strip().upper()):  # "3M": the minus forgotten
        raise ParameterError(rule, parameter=name)
    return params.iso_date(value, name)


@dataclass(frozen=True)
class ExploreParams:
    """06_explore's parameters. ``symbols``: a comma list, or "" for the first symbol in bronze; ``interval``:
    bar length in sessions (1 = bronze daily bars, else a silver interval); ``start``: an ISO date or a period
    back from ``end`` (``"-3M"``), ``None`` for one year; ``end``: an ISO date or ``None`` for the symbol's latest
    session; ``compare``: the intervals shown side by side; ``returns_over``/``returns_on``: the cross-section,
    every symbol's return over its trailing ``returns_over`` NYSE sessions ending ``returns_on`` (``None``: the
    latest session in bronze)."""

    symbols: str = ""
    interval: int = 5
    start: str | dt.date | None = None
    end: str | dt.date | None = None
    compare: str = "1,5,21"
    returns_over: int = 21
    returns_on: str | dt.date | None = None

    def check(self) -> CheckedExplore:
        """Every parameter checked before the lake is read."""
        symbols = params.symbol_list(self.symbols) if str(self.symbols).strip() else None
        interval = params.interval(self.interval, "interval")
        a, b = relative_start(self.start, "start"), params.iso_date(self.end, "end")
        if isinstance(a, dt.date) and b is not None and b < a:
            raise ParameterError(f"end {b} is before start {a}", parameter="end")
        over = params.count(self.returns_over, "returns_over", 1, 10_000)
        on = params.iso_date(self.returns_on, "returns_on")
        return CheckedExplore(symbols, interval, a, b, params.intervals(self.compare, "compare"), over, on)


@dataclass(frozen=True)
class CheckedExplore:
    """``ExploreParams`` parsed: ``symbols`` sorted (``None``: the first symbol in bronze), dates as dates (a
    relative ``start`` as ``RelativeStart``), ``compare`` as sorted unique intervals."""

    symbols: tuple[str, ...] | None
    interval: int
    start: dt.date | RelativeStart | None
    end: dt.date | None
    compare: tuple[int, ...] = (1, 5, 21)
    returns_over: int = 21
    returns_on: dt.date | None = None
