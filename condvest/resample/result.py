"""What a resample run reports: one row per interval, and the run's summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd


@dataclass
class IntervalResult:
    interval: int
    mode: str  # full | incremental | unchanged
    bars_written: int = 0
    months_rewritten: int = 0
    symbols_changed: int = 0
    rows_read: int = 0
    bars_total: int = 0
    last_session: str | None = None


@dataclass
class ResampleReport:
    run_id: str
    intervals: tuple[int, ...]
    results: list[IntervalResult] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""

    def to_frame(self) -> pd.DataFrame:
        cols = list(IntervalResult.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.results], columns=cols)

    def summary(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "message": self.message,
            "seconds": round(self.seconds, 2),
            "bars_written": sum(r.bars_written for r in self.results),
            "bars_by_interval": {f"{r.interval}d": r.bars_written for r in self.results},
        }

    def raise_for_status(self) -> None:
        """Nothing to raise: a resample that cannot finish raises at once and commits no checkpoint."""
