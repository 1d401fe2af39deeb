"""01_fetch's result: each session's outcome and counts, and the run's report (``summary``, ``to_frame``,
``raise_for_status``).

A session is a success when bronze holds it (``done``), holds it with gaps inside some symbol's trading life
(``warn``: a halt, asked again next run), or when a shard staged it for its commit (``staged``). A session
``partial`` (a symbol of it was not fetched) or ``failed`` is not: both count in ``summary()["sessions_failed"]``
and both are listed by ``failed`` and raised by ``raise_for_status``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd

from condvest.errors import AuthError, CondvestError, FetchFailed, NotYetAvailable, PlanLimit
from condvest.fetch.plan import FetchPlan
from condvest.fetch.rebase import RebaseReport
from condvest.shards import Shard

log = logging.getLogger(__name__)

__all__ = ["FetchReport", "SessionOutcome", "SessionResult", "session_outcome"]


class SessionOutcome(StrEnum):
    """How a session of a fetch run ended (its ``status``; the strings are those the tables show)."""

    PENDING = "pending"  # not settled yet
    DONE = "done"  # bronze holds the session for every symbol asked
    WARN = "warn"  # held, but a symbol has no bar inside its trading life (a halt): asked again next run
    PARTIAL = "partial"  # a symbol of the session was not fetched: the run fails, the next run asks for it
    FAILED = "failed"  # nothing recorded for the session: the next run fetches it again
    STAGED = "staged"  # a shard's: its commit settles the session

    @property
    def ok(self) -> bool:
        """A success: done, warn or staged (partial and failed are not)."""
        return self in (SessionOutcome.DONE, SessionOutcome.WARN, SessionOutcome.STAGED)


@dataclass
class SessionResult:
    session: dt.date
    status: SessionOutcome = SessionOutcome.PENDING
    symbols: int = 0  # symbols bronze holds for the session from this run (a symbol list; 0 for "all")
    gaps: str = ""  # symbols without a bar inside their trading life (a halt), comma separated
    source_rows: int = 0
    duplicates: int = 0
    quarantined: int = 0
    revised: int = 0  # a settled session's bars the vendor revised after the first fetch (written again)
    #: moves beyond the limits with no split recorded (``condvest.fetch.suspects``): "XYZ x2.05", comma separated
    suspect: str = ""
    bronze_rows: int = 0
    postgres_rows: int = 0
    seconds: float = 0.0
    error: str = ""


@contextmanager
def session_outcome(res: SessionResult) -> Iterator[None]:
    """Fetching one session: what the block raises becomes the session's outcome. Not yet available on this
    plan (today before the end of day) is a ``warn`` the next run fetches; a refused key or plan stops the run
    (raised); any other workbench error fails the session."""
    try:
        yield
    except NotYetAvailable as exc:
        res.status, res.error = SessionOutcome.WARN, str(exc)
        log.warning("fetch=session_not_yet_available session=%s vendor=%r", res.session, exc.vendor)
    except (AuthError, PlanLimit):
        raise
    except CondvestError as exc:
        res.status, res.error = SessionOutcome.FAILED, str(exc)
        log.error("fetch=session_failed session=%s error=%s", res.session, exc)


@dataclass
class FetchReport:
    run_id: str
    plan: FetchPlan
    sessions: list[SessionResult] = field(default_factory=list)
    symbol_errors: dict[str, str] = field(default_factory=dict)
    #: tickers of the reference list the lake cannot store (never requested); their bars in a grouped answer
    #: go to the quarantine with the reason instead
    unstorable_tickers: list[str] = field(default_factory=list)
    #: a symbol list's sessions: (symbols held, outside their trading life, gaps), what the manifest records
    coverage: dict[dt.date, tuple[set[str], set[str], set[str]]] = field(default_factory=dict, repr=False)
    market_status: str = "not checked"
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    rebase: RebaseReport = field(default_factory=RebaseReport)
    #: the run's suspect moves: a close-to-close move beyond the limits with no split recorded (stored, not
    #: quarantined), with the split check to run (``condvest.fetch.suspects``)
    suspects: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    #: one part of a sharded history backfill or its commit (``condvest.fetch.sharded``); None: not sharded
    shard: Shard | None = None
    message: str = ""

    @property
    def staged(self) -> bool:
        """True for a shard of a sharded backfill: its outcome is staged, the commit settles and records it."""
        return self.shard is not None and not self.shard.is_commit

    @property
    def failed_sessions(self) -> list[SessionResult]:
        """The sessions that are not a success: failed, and partial (a symbol of the session was not fetched)."""
        return [r for r in self.sessions if not r.status.ok]

    @property
    def failed(self) -> dict[str, str]:
        """What ``raise_for_status`` reports: each failed or partial session, and each symbol that failed."""
        out = {r.session.isoformat(): r.error for r in self.failed_sessions}
        out.update({f"symbol {s}": e for s, e in self.symbol_errors.items()})
        return out

    @property
    def status(self) -> str:
        if self.plan.mode == "skip":
            return "skipped"
        if self.staged:
            return "staged"
        return "failed" if self.failed else "ok"

    def to_frame(self) -> pd.DataFrame:
        """Per-session counts and timings."""
        cols = list(SessionResult.__dataclass_fields__)
        rows = [{**asdict(r), "status": str(r.status)} for r in self.sessions]
        return pd.DataFrame(rows, columns=cols)

    def summary(self) -> dict[str, Any]:
        """The run's outcome for the run index (no timings: the same market and lake give the same figures)."""
        t = self.to_frame()
        return {
            "mode": self.plan.mode,
            "status": self.status,
            "as_of": self.plan.as_of.isoformat(),
            "sessions": len(self.sessions),
            "sessions_failed": len(self.failed_sessions),
            "bronze_rows": int(t["bronze_rows"].sum()) if len(t) else 0,
            "postgres_rows": int(t["postgres_rows"].sum()) if len(t) else 0,
            "quarantined": int(t["quarantined"].sum()) if len(t) else 0,
            "duplicates": int(t["duplicates"].sum()) if len(t) else 0,
            "requests": self.requests,
            "retries": self.retries,
            "reason": self.plan.reason,
            **self.rebase.summary(),
            **({"revised": int(t["revised"].sum())} if len(t) and t["revised"].sum() else {}),
            **({"suspect": len(self.suspects)} if len(self.suspects) else {}),
            **({"message": self.message} if self.message else {}),
        }

    def note_suspects(self, moves: pd.DataFrame, shown: int = 10) -> None:
        """Keep the run's suspect moves and name them on their sessions (``SessionResult.suspect``)."""
        self.suspects = moves.reset_index(drop=True)
        by_day = {r.session: r for r in self.sessions}
        for day, part in moves.groupby("date"):
            if day not in by_day:
                continue
            names = [f"{s} x{r:g}" for s, r in zip(part["symbol"], part["ratio"], strict=True)]
            more = f", {len(names) - shown} more" if len(names) > shown else ""
            by_day[day].suspect = ", ".join(names[:shown]) + more

    def raise_for_status(self) -> None:
        """``FetchFailed`` listing the failed sessions and symbols (after the notebook showed the tables); a shard
        never raises here: its failed symbols fail the commit, as they fail an unsharded run."""
        if self.failed and not self.staged:
            raise FetchFailed(failed=self.failed)
