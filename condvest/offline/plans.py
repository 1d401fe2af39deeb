"""The vendor's plans as the offline server plays them (``serve --plan free|starter|developer``).

Each plan answers as the vendor documents it for that plan (https://polygon.io/pricing):

    plan        history   today's session                                  requests
    unlimited   all       final at its 16:00 close (the demo's and nbval's)  unlimited
    free        2 years   403 "before end of day" until the day has ended     5 a minute, 429 without Retry-After
    starter     5 years   status DELAYED all day (15-minute delayed)           unlimited
    developer   10 years  status DELAYED all day (15-minute delayed)           unlimited

Every plan but ``unlimited`` also: refuses history older than its years or a date after today with the
vendor's 403 "Your plan doesn't include this data timeframe"; revises a session's bars after the close
(volume, VWAP and trade count answered before the next session has closed are provisional, the vendor's
revision); puts ``next_url`` on the vendor's current host (``https://api.massive.com``), which the client
follows on its own configured host. Symbols delisted with ``ServerHandle.delist`` have no bars after their
last session and leave the ticker list, on every plan.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from condvest.errors import ParameterError

__all__ = ["PLANS", "RateWindow", "VendorPlan", "plan_named", "provisional"]

UPGRADE = "Please upgrade your plan at https://polygon.io/pricing"
TODAY_MSG = f"Attempted to request today's data before end of day. {UPGRADE}"
TIMEFRAME_MSG = f"Your plan doesn't include this data timeframe. {UPGRADE}"
ENTITLEMENT_MSG = f"You are not entitled to this data. {UPGRADE}"
VENDOR_ORIGIN = "https://api.massive.com"


@dataclass(frozen=True)
class VendorPlan:
    name: str
    history_years: int | None = None  # None: every session since 1962
    requests_per_minute: int | None = None  # None: unlimited
    today: str = "final"  # "final" (at the close), "eod" (refused until the day ends), "delayed" (status DELAYED)
    revises: bool = False  # the last session's bars are provisional until the next session closes
    next_origin: str | None = None  # the host next_url names (None: the server's own)

    def first_day(self, today: dt.date) -> dt.date | None:
        """The oldest date this plan answers (None: no limit)."""
        if self.history_years is None:
            return None
        try:
            return today.replace(year=today.year - self.history_years)
        except ValueError:  # February 29
            return today.replace(year=today.year - self.history_years, day=28)


PLANS = {
    "unlimited": VendorPlan("unlimited"),
    "free": VendorPlan("free", 2, 5, "eod", True, VENDOR_ORIGIN),
    "starter": VendorPlan("starter", 5, None, "delayed", True, VENDOR_ORIGIN),
    "developer": VendorPlan("developer", 10, None, "delayed", True, VENDOR_ORIGIN),
}


def plan_named(name: str | VendorPlan) -> VendorPlan:
    if isinstance(name, VendorPlan):
        return name
    try:
        return PLANS[name]
    except KeyError:
        raise ParameterError(f"unknown plan {name!r}; known: {', '.join(PLANS)}", parameter="plan") from None


class RateWindow:
    """The plan's limit: at most ``limit`` requests answered within any ``window`` seconds (sliding)."""

    def __init__(self, limit: int | None, window: float) -> None:
        self.limit, self.window = limit, window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """True when one more request fits (it is counted), False for a 429."""
        if self.limit is None:
            return True
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            if len(self._times) >= self.limit:
                return False
            self._times.append(now)
            return True


def refusal(plan: VendorPlan, endpoint: str, first: dt.date | None, last: dt.date | None, today: dt.date) -> str | None:
    """The vendor's 403 message for a bar request of ``first..last`` on this plan at ``today``, or None."""
    if plan.name == "unlimited" or endpoint not in ("grouped", "range") or first is None:
        return None
    last = last or first
    oldest = plan.first_day(today)
    if (oldest is not None and first < oldest) or first > today:
        return TIMEFRAME_MSG
    if endpoint == "grouped" and plan.today == "eod" and last >= today:
        return TODAY_MSG
    return None


def provisional(bar: dict[str, Any]) -> dict[str, Any]:
    """The first answer of a session's bar before the vendor's revision: late trades not yet counted."""
    out = dict(bar)
    v = bar["v"]
    out["v"] = round(v * 0.97) if isinstance(v, int) else round(v * 0.97, 4)
    if "n" in bar:
        out["n"] = max(1, round(bar["n"] * 0.97))
    if "vw" in bar:
        out["vw"] = round(bar["vw"] * 0.999, 4)
    return out
