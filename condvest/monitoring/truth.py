"""05_monitoring's "is what the lake and the cache hold true" section: the suspect moves 01_fetch listed (a
close-to-close move beyond ``CONDVEST_SUSPECT_MOVE`` with no split recorded, ``bronze/_suspect/``) that no split
recorded since explains, each with the split check to run; and what the last comparison of Postgres with bronze
found (``04_retention`` with ``mode=sync``, the weekly pipeline's second stage: ``condvest.pg_cache.read_last_sync``).

    read_truth(store, since) -> Truth          (two cheap reads: the suspect listing, one small JSON object)
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from condvest.bars import split_check, unexplained
from condvest.lake import SUSPECT_PREFIX
from condvest.pg_cache import read_last_sync
from condvest.splits import read_splits
from condvest.storage import Store

__all__ = ["SUSPECT_TABLE_COLUMNS", "Truth", "open_suspects", "read_truth"]

_SUSPECT_DATE = re.compile(re.escape(SUSPECT_PREFIX) + r"/date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$")
SUSPECT_TABLE_COLUMNS = ["date", "symbol", "previous_date", "previous_close", "close", "ratio", "check"]


def open_suspects(moves: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """The moves (``symbol``, ``date``, ``previous_date``, ...) that no split in ``splits`` explains (one executed
    after the previous session and on or before the move's), newest first, with the split check (pure)."""
    if moves.empty:
        return pd.DataFrame(columns=SUSPECT_TABLE_COLUMNS)
    out = unexplained(moves, splits).drop_duplicates(["symbol", "date"], keep="last")
    out = out.assign(check=[split_check(d) for d in out["previous_date"]])
    return out.sort_values(["date", "symbol"], ascending=[False, True])[SUSPECT_TABLE_COLUMNS].reset_index(drop=True)


def _read_moves(store: Store, since: dt.date) -> pd.DataFrame:
    frames = []
    for o in store.list(SUSPECT_PREFIX + "/"):
        m = _SUSPECT_DATE.match(o.key)
        if m is None or dt.date.fromisoformat(m.group(1)) < since:
            continue
        df = pq.read_table(io.BytesIO(store.get(o.key))).to_pandas()
        for col in ("date", "previous_date"):
            df[col] = pd.to_datetime(df[col]).dt.date
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass(frozen=True)
class Truth:
    """The suspect moves still open and the last Postgres-against-bronze comparison (``None``: none ran yet)."""

    suspects: pd.DataFrame
    sync: dict[str, Any] | None = None
    since: dt.date | None = None
    sync_sessions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> dict[str, Any]:
        s = self.sync or {}
        return {
            "suspect_moves": len(self.suspects),
            "postgres_sessions_differing": int(s.get("sessions_differing", 0)),
            "postgres_sessions_still_differing": int(s.get("sessions_still_differing", 0)),
        }

    @property
    def look(self) -> bool:
        """Something to act on: a suspect move, a session Postgres still differs in from bronze, or no comparison
        of Postgres with bronze yet."""
        s = self.summary()
        return bool(s["suspect_moves"] or s["postgres_sessions_still_differing"] or self.sync is None)

    def detail(self) -> str:
        n = len(self.suspects)
        moves = f"{n} suspect move(s) with no split recorded since {self.since}" if n else "no suspect move"
        if self.sync is None:
            return f"{moves}; Postgres never compared with bronze (04_retention mode='sync', the weekly pipeline)"
        s = self.sync
        return (
            f"{moves}; Postgres against bronze on {str(s.get('finished_at', '?'))[:10]} "
            f"({s.get('first')}..{s.get('last')}): "
            f"{s.get('sessions_differing', 0)} session(s) differed, {s.get('rows_refilled', 0)} rows re-filled, "
            f"{s.get('sessions_still_differing', 0)} still differ"
        )

    def items(self) -> tuple[tuple[str, Any], ...]:
        """What the notebook shows: the open suspect moves, then the sessions the last sync found differing."""
        moves: Any = self.suspects if len(self.suspects) else "none"
        out: tuple[tuple[str, Any], ...] = (
            (f"Suspect moves since {self.since} (no split recorded; run the check to read the splits)", moves),
        )
        if self.sync is None:
            return (*out, ("", "Postgres has not been compared with bronze yet (04_retention with mode='sync')."))
        caption = f"Postgres against bronze: {self.detail().split('; ', 1)[1]}"
        table: Any = self.sync_sessions if len(self.sync_sessions) else "no session differed"
        return (*out, (caption, table))


def read_truth(store: Store, since: dt.date) -> Truth:
    """The suspect moves of sessions since ``since`` that no recorded split explains, and the last sync's outcome."""
    suspects = open_suspects(_read_moves(store, since), read_splits(store))
    sync = read_last_sync(store)
    sessions = pd.DataFrame((sync or {}).get("sessions") or [])
    return Truth(suspects, sync, since, sessions)
