"""Switchable faults of the offline Polygon server (RELIABILITY.md rows 13-18).

A ``FaultPlan`` is an ordered list of ``Fault`` rules. Each request to a data endpoint takes the first
rule whose ``path`` is a substring of the request path, whose kind applies to that endpoint and whose
``times`` budget is not spent; the rule then fires once (``times`` counts down, ``None`` = forever).

    kind                      effect
    http_429                  429 with ``Retry-After: <retry_after>`` (seconds)
    http_429_no_retry_after   429 without Retry-After
    http_5xx                  ``status`` 500 (JSON error), 502 / 503 / 504 (an HTML gateway page)
    connection_reset          headers and half the body, then the TCP connection is aborted
    truncated_json            HTTP 200 whose body is cut in half (valid HTTP, invalid JSON)
    error_200                 HTTP 200 carrying ``{"status": "ERROR", "error": ...}``
    slow_body                 headers and half the body, a stall of ``delay`` seconds, then the rest
    duplicate_bars            the first ``count`` bars twice in the response; a paged range answer
                              also repeats its last bar at the top of the next page
    bad_bars                  ``count`` bars broken: high below open/close, low above, negative volume
    empty_session             a session answers ``resultsCount: 0`` and no ``results``
    odd_tickers               the first ``count`` bars of a grouped answer get real-world ticker shapes
                              (``ODD_TICKERS``: class shares, preferreds, warrants, units, and shapes
                              the lake cannot store such as ``ABC/WS`` or ``TEST^``)
    halt                      ``count`` bars from the middle of the answer are left out (a trading halt:
                              a range answer lacks sessions inside the symbol's life)
    misdated                  the first ``count`` bars are stamped on another day: a grouped answer's one
                              day before the session asked for, a range answer's a week before its start

The last six apply to the grouped-daily and range endpoints only.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from condvest.errors import ParameterError

__all__ = ["DATA_FAULTS", "FAULT_KINDS", "ODD_TICKERS", "Fault", "FaultPlan"]

FAULT_KINDS = (
    "http_429",
    "http_429_no_retry_after",
    "http_5xx",
    "connection_reset",
    "truncated_json",
    "error_200",
    "slow_body",
    "duplicate_bars",
    "bad_bars",
    "empty_session",
    "halt",
    "odd_tickers",
    "misdated",
)
#: the tickers ``odd_tickers`` hands out, in order: the first five are stored, the last four quarantined
ODD_TICKERS = ("BRK.A", "BACpB", "XYZ.WS.A", "XYZ.U", "ABCw", "ABC/WS", "TEST^", "A B", "../ETC")
#: faults that change the bars of a grouped or range answer
DATA_FAULTS = frozenset({"duplicate_bars", "bad_bars", "empty_session", "halt", "odd_tickers", "misdated"})
BAR_ENDPOINTS = frozenset({"grouped", "range"})


@dataclass
class Fault:
    """One rule: ``kind`` fires on requests whose path contains ``path``, ``times`` times (None: always)."""

    kind: str
    path: str = ""
    times: int | None = None
    status: int = 503
    retry_after: float = 1.0
    delay: float = 2.0
    count: int = 3

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ParameterError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}", parameter="kind")
        if self.status not in (500, 502, 503, 504):
            raise ParameterError(f"http_5xx status must be 500, 502, 503 or 504, got {self.status}", parameter="status")
        if self.times is not None and self.times < 0:
            raise ParameterError(f"times must be >= 0 or None, got {self.times}", parameter="times")
        if self.delay < 0 or self.retry_after < 0 or self.count < 1:
            raise ParameterError("delay and retry_after must be >= 0 and count >= 1", parameter="fault")

    def applies_to(self, endpoint: str) -> bool:
        return self.kind not in DATA_FAULTS or endpoint in BAR_ENDPOINTS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        extra = set(doc) - known
        if extra:
            raise ParameterError(f"unknown fault field(s) {sorted(extra)}", parameter="fault")
        return cls(**doc)


@dataclass
class FaultPlan:
    """The server's live fault rules (thread-safe: tests change them while the server runs)."""

    rules: list[Fault] = field(default_factory=list)
    #: every fault that fired: kind, path, and details (e.g. which bars were broken)
    fired: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, kind: str, *, path: str = "", times: int | None = None, **params: Any) -> Fault:
        """Append a rule; e.g. ``add("http_429", path="/grouped/", times=2, retry_after=0.1)``."""
        fault = Fault(kind, path=path, times=times, **params)
        with self._lock:
            self.rules.append(fault)
        return fault

    def set(self, faults: list[Fault | dict[str, Any]], *, replace: bool = True) -> None:
        parsed = [f if isinstance(f, Fault) else Fault.from_dict(f) for f in faults]
        with self._lock:
            if replace:
                self.rules.clear()
            self.rules.extend(parsed)

    def clear(self) -> None:
        """Remove every rule and forget what fired."""
        with self._lock:
            self.rules.clear()
            self.fired.clear()

    def take(self, path: str, endpoint: str) -> Fault | None:
        """The rule that fires for this request (its budget is charged), or None."""
        with self._lock:
            for fault in self.rules:
                if fault.path in path and fault.applies_to(endpoint) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    self.fired.append({"kind": fault.kind, "path": path, "details": {}})
                    return fault
        return None

    def note(self, path: str, **details: Any) -> None:
        """Attach details to the last fault that fired on ``path``."""
        with self._lock:
            for entry in reversed(self.fired):
                if entry["path"] == path:
                    entry["details"].update(details)
                    return

    def fired_kinds(self) -> list[str]:
        with self._lock:
            return [e["kind"] for e in self.fired]

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [f.to_dict() for f in self.rules],
                "fired": [dict(e) for e in self.fired],
                "kinds": list(FAULT_KINDS),
            }
