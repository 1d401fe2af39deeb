"""04_retention's parameters, checked once (pure, no I/O): ``RetentionParams(...).check() -> CheckedRetention`` or
``ParameterError`` naming the parameter. ``None`` stays ``None`` (the settings' retention, the run's today):
``policy.plan`` fills them in from the settings."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from condvest import params
from condvest.errors import ParameterError
from condvest.settings import Retention

__all__ = ["METHODS", "MODES", "CheckedRetention", "RetentionParams", "retention_value"]

MODES = ("deploy", "dry-run", "archive", "adopt", "sync")
METHODS = ("auto", "rows")
_LOCK_TIMEOUT_RE = re.compile(r"^\d+(\.\d+)?\s*(ms|s|min)?$")


@dataclass(frozen=True)
class RetentionParams:
    """04_retention's parameters: ``mode`` (deploy | dry-run | archive | adopt: convert the previous pipeline's
    tables in place; dry-run shows what it would do | sync: compare raw_ohlcv with bronze over the window, session
    by session, and re-fill what differs from bronze), ``retention`` (e.g. "3 years 1 month";
    None: the setting 01_fetch uses), ``as_of`` (the run's today; None: the settings'), ``lock_timeout``,
    ``method`` (auto: whole months by partition; rows: row by row)."""

    mode: str = "deploy"
    retention: Retention | str | None = None
    as_of: dt.date | str | None = None
    lock_timeout: str = "5s"
    method: str = "auto"

    def check(self) -> CheckedRetention:
        """Every parameter checked before anything is written."""
        mode = params.choice(self.mode, "mode", MODES)
        method = params.choice(self.method, "method", METHODS)
        lock_timeout = self.lock_timeout
        if not isinstance(lock_timeout, str) or not _LOCK_TIMEOUT_RE.match(lock_timeout.strip()):
            raise ParameterError(f"cannot read {lock_timeout!r}; write e.g. '5s' or '500ms'", parameter="lock_timeout")
        retention = None if self.retention is None else retention_value(self.retention)
        as_of = params.iso_date(self.as_of, "as_of")
        return CheckedRetention(mode, retention, as_of, lock_timeout.strip(), method)


@dataclass(frozen=True)
class CheckedRetention:
    """``RetentionParams`` checked: ``retention`` parsed (``None``: the settings'), ``as_of`` a date (``None``:
    the run's today), ``lock_timeout`` stripped."""

    mode: str
    retention: Retention | None
    as_of: dt.date | None
    lock_timeout: str = "5s"
    method: str = "auto"


def retention_value(value: Retention | str | None) -> Retention:
    """A ``Retention`` from a value or its text (``"3 years 1 month"``); ``None``: the default."""
    if value is None:
        return Retention()
    if isinstance(value, Retention):
        return value
    return Retention.parse(value)
