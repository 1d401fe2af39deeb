"""05_monitoring's parameters, checked once (pure, no I/O): ``MonitoringParams(...).check() -> CheckedMonitoring``
or ``ParameterError`` naming the parameter."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from condvest import params

__all__ = ["CheckedMonitoring", "MonitoringParams"]

_MAX_SESSIONS = 20_000


@dataclass(frozen=True)
class MonitoringParams:
    """05_monitoring's parameters. ``recent_sessions``: the window checked for missing sessions (01_fetch's
    ``max_backfill_days``); ``chart_sessions``: the sessions in the rows chart (neither window starts before
    the first session the manifest holds); ``runs_shown``: runs in the run table; ``read_postgres=False``
    skips the database (no connection, no embedded cluster started); ``as_of``: the run's "today" (default:
    the settings', i.e. CONDVEST_AS_OF or today)."""

    recent_sessions: int = 30
    chart_sessions: int = 250
    runs_shown: int = 20
    read_postgres: bool = True
    as_of: dt.date | str | None = None

    def check(self) -> CheckedMonitoring:
        """Every parameter checked before anything is read."""
        return CheckedMonitoring(
            params.count(self.recent_sessions, "recent_sessions", 1, _MAX_SESSIONS),
            params.count(self.chart_sessions, "chart_sessions", 1, _MAX_SESSIONS),
            params.count(self.runs_shown, "runs_shown", 1, _MAX_SESSIONS),
            params.flag(self.read_postgres, "read_postgres"),
            params.iso_date(self.as_of, "as_of"),
        )


@dataclass(frozen=True)
class CheckedMonitoring:
    """``MonitoringParams`` checked; ``as_of`` a date, ``None``: the run's today."""

    recent_sessions: int
    chart_sessions: int
    runs_shown: int
    read_postgres: bool
    as_of: dt.date | None
