"""Parameter checks shared by every stage: each takes a notebook's raw value and returns it typed, or raises
``ParameterError`` naming the parameter. Pure; the stages call them before anything is written.

Every stage has one shape over them, in ``condvest/<stage>/params.py``: a frozen ``XParams`` (the notebook's
``parameters`` cell: same names, same defaults; a test holds them together) whose ``check()`` returns a frozen
``CheckedX`` of parsed values, or raises ``ParameterError``; no I/O, so the runner can check before a kernel starts.

    iso_date("2025-10-17", "date") -> date        None / "" / "None" -> None
    date_range(start, end, as_of=...) -> (start, end)
    count(30, "max_backfill_days", 1, 2000) -> 30
    flag(True, "dry_run") -> True                 only real booleans (papermill passes them typed)
    choice("deploy", "mode", MODES) -> "deploy"
    symbol("BRK.B") -> "BRK.B", symbol_list("AAPL, msft, BACpB") -> ("AAPL", "BACpB", "MSFT"), "all" -> None
    intervals("3,5,8") -> (3, 5, 8)
    run_id("20251017T...-01_fetch-a1b2") -> the same string
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

from condvest.errors import ParameterError

#: tickers the lake stores (a key segment ``symbol=X``, a URL path segment), as Polygon spells them (CQS style):
#: class shares BRK.A, BF.B; preferreds BACpB, GSpD (lowercase p); warrants XYZ.WS, XYZ.WS.A; units XYZ.U;
#: rights ABCr, when issued ABCw (lowercase suffixes); BF-B. Letters, digits, '.' and '-', at most 16
#: characters, starting with a letter or digit, no '..'. Anything else Polygon sends is quarantined.
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,15}$")
#: run ids name objects and folders: no '/', no leading dot
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: the rule ``SYMBOL_RE`` enforces, in the words an error message gives
SYMBOL_RULE = (
    "a ticker is 1 to 16 letters, digits, '.' or '-', starting with a letter or digit, "
    "as Polygon writes it (class shares BRK.A, preferreds BACpB)"
)
#: the shape of a date parameter; ``iso_date`` then checks it is on the calendar
_DATE_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_INTERVAL = 10_000


def iso_date(value: object, name: str) -> dt.date | None:
    """An ISO ``YYYY-MM-DD`` string (or a date) as a date; ``None``, ``""`` and ``"None"`` mean unset."""
    if value is None or value in ("", "None"):
        return None
    if isinstance(value, dt.datetime):
        raise ParameterError(f"expected a date YYYY-MM-DD, got a date and time {value!r}", parameter=name)
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ParameterError(f"expected a date written YYYY-MM-DD, got {value!r}", parameter=name)
    text = value.strip()
    if not _DATE_SHAPE.fullmatch(text):
        raise ParameterError(f"expected a date written YYYY-MM-DD, got {value!r}", parameter=name)
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:  # the shape is right, the day is not on the calendar (2026-02-30)
        problem = f"invalid date {value!r}: {exc}; write a calendar date YYYY-MM-DD"
        raise ParameterError(problem, parameter=name) from None


def date_range(
    start: object, end: object, *, as_of: dt.date | None = None, names: tuple[str, str] = ("start", "end")
) -> tuple[dt.date, dt.date] | None:
    """Both bounds or neither (``None``); ``end`` not before ``start`` and not after ``as_of``."""
    a, b = iso_date(start, names[0]), iso_date(end, names[1])
    if a is None and b is None:
        return None
    if a is None or b is None:
        raise ParameterError("give both start and end", parameter=names[0] if a is None else names[1])
    if b < a:
        raise ParameterError(f"end {b} is before start {a}", parameter=names[1])
    if as_of is not None and b > as_of:
        raise ParameterError(f"end {b} is after as_of {as_of}", parameter=names[1])
    return a, b


def count(value: object, name: str, low: int = 0, high: int | None = None) -> int:
    """An integer in ``low..high`` (booleans are not integers here)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ParameterError(f"must be an integer in {span}, got {value!r}", parameter=name)
    return value  # type: ignore[return-value]


def flag(value: object, name: str) -> bool:
    """``True`` or ``False`` only (a string "False" is truthy: refuse it rather than guess)."""
    if not isinstance(value, bool):
        raise ParameterError(f"expected True or False, got {value!r}", parameter=name)
    return value


def choice(value: object, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ParameterError(f"unknown {name} {value!r}; choose one of {', '.join(options)}", parameter=name)
    return value


def storable_symbol(value: object) -> bool:
    """True when ``value`` is a ticker the lake can store safely (``SYMBOL_RE``, no ``..``)."""
    return isinstance(value, str) and SYMBOL_RE.fullmatch(value) is not None and ".." not in value


def symbol(value: object, name: str = "symbols") -> str:
    """One ticker as the lake stores it; anything that could escape a path or a query is refused."""
    if not storable_symbol(value):
        raise ParameterError(f"invalid symbol {value!r}: {SYMBOL_RULE}", parameter=name)
    return value  # type: ignore[return-value]


def symbol_list(value: str | Sequence[str] | None, name: str = "symbols") -> tuple[str, ...] | None:
    """``"all"`` -> ``None``; ``"AAPL, msft, BACpB"`` -> ``("AAPL", "BACpB", "MSFT")`` (checked, deduplicated,
    sorted). A ticker typed all in lowercase is upper-cased; one with an upper-case letter is kept as written,
    since Polygon's lowercase suffixes name other securities (BACpB is a preferred, BACPB is not)."""
    if value is None:
        return None
    items = list(value) if isinstance(value, list | tuple) else str(value).split(",")
    items = [s.strip() for s in items if isinstance(s, str) and s.strip()]
    if not items:
        raise ParameterError("no symbols given (use 'all' or a comma list)", parameter=name)
    if len(items) == 1 and items[0].lower() == "all":
        return None
    return tuple(sorted({symbol(s if any(c.isupper() for c in s) else s.upper(), name) for s in items}))


def interval(value: object, name: str = "intervals") -> int:
    """One bar length in sessions, ``1..MAX_INTERVAL``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INTERVAL:
        raise ParameterError(f"interval must be an integer in 1..{MAX_INTERVAL}, got {value!r}", parameter=name)
    return value


def intervals(value: str | int | Iterable[int], name: str = "intervals") -> tuple[int, ...]:
    """``"3,5,8"`` (or ints) -> sorted unique intervals."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if not value.strip() or any(not p.isdigit() for p in parts):
            raise ParameterError(
                f"intervals must be positive integers separated by commas, got {value!r}", parameter=name
            )
        values: list[object] = [int(p) for p in parts]
    elif isinstance(value, int):
        values = [value]
    else:
        values = list(value)
    if not values:
        raise ParameterError("no interval given", parameter=name)
    return tuple(sorted({interval(v, name) for v in values}))


def run_id(value: object, name: str = "run_id") -> str:
    if not isinstance(value, str) or not RUN_ID_RE.match(value):
        raise ParameterError(f"{value!r}: use letters, digits, '.', '_' and '-' (no '/')", parameter=name)
    return value
