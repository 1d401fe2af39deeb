"""Suspect moves of a fetch run: a close-to-close move beyond ``Settings.suspect_move`` with no split recorded for
that symbol between the two sessions. What a split the lake does not know about looks like; it may also be real,
so the bars stay stored. Each is listed on its session (``SessionResult.suspect``), in the run's ``suspects``
table, and written to ``bronze/_suspect/date=D/<run id>.parquet`` for 05_monitoring, which links the split check
(``python -m runner run 01_fetch -p rebase <date>``).

A session's bar is compared with the symbol's bar before it in the run's own sessions, or, for the first session of
the run, with the previous session's bars in bronze's session batches (``bronze/_batches/``: the daily runs'; a session
already folded into the histories by compaction has none, and its first bars are then not compared). A symbol's range
written to its history (a backfill) is compared within itself as it is written (only its moves are kept, never its
bars). Splits are read after the run's rebase, so a split the run learned of is never suspect.
"""

from __future__ import annotations

import io
import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest.bars import SUSPECT_COLUMNS, split_check, suspect_moves, unexplained
from condvest.calendar import previous_session
from condvest.errors import ObjectNotFound, ParameterError
from condvest.lake import batch_prefix, suspect_key
from condvest.parquet_rows import parquet_bytes
from condvest.settings import MoveLimits
from condvest.splits import read_splits
from condvest.storage import Store

__all__ = ["SUSPECT_SCHEMA", "find_suspects", "previous_closes"]

log = logging.getLogger(__name__)

SUSPECT_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("previous_date", pa.date32()),
        ("previous_close", pa.float64()),
        ("close", pa.float64()),
        ("ratio", pa.float64()),
    ]
)


def previous_closes(store: Store, days: set) -> pd.DataFrame:
    """The closes bronze's session batches hold for the session before each of ``days`` that is not itself one of
    ``days`` (newest write winning); empty where no batch is left."""
    wanted = set()
    for day in days:
        try:
            prev = previous_session(day)
        except ParameterError:  # the calendar's first session: nothing before it
            continue
        if prev not in days:
            wanted.add(prev)
    frames = []
    for prev in sorted(wanted):
        for obj in store.list(batch_prefix(prev)):
            try:
                t = pq.read_table(io.BytesIO(store.get(obj.key)), columns=["symbol", "date", "close", "ingested_at"])
            except ObjectNotFound:
                continue
            except (pa.ArrowException, OSError, KeyError) as exc:  # a shortcut only: the move goes unchecked
                log.warning("suspect=batch_unreadable key=%s error=%s", obj.key, exc)
                continue
            frames.append(t.to_pandas())
    if not frames:
        return pd.DataFrame(columns=["symbol", "date", "close"])
    df = pd.concat(frames, ignore_index=True).sort_values("ingested_at", kind="stable")
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df.drop_duplicates(["symbol", "date"], keep="last")[["symbol", "date", "close"]]


def find_suspects(
    store: Store, closes: list[pd.DataFrame], moves: list[pd.DataFrame], limits: MoveLimits, run_id: str
) -> pd.DataFrame:
    """The run's suspect moves (``SUSPECT_COLUMNS`` + ``check``): the sessions' ``closes`` compared with each other
    and with the previous session's batches, plus the ``moves`` found inside the histories written, less those a
    split recorded by now explains; each session's written under ``bronze/_suspect/``."""
    found = [m for m in moves if len(m)]
    frames = [c for c in closes if len(c)]
    if frames:
        bars = pd.concat(frames, ignore_index=True).drop_duplicates(["symbol", "date"], keep="last")
        found.append(suspect_moves(bars, previous_closes(store, set(bars["date"])), _NO_SPLITS, limits))
    found = [m for m in found if len(m)]
    if not found:
        return pd.DataFrame(columns=[*SUSPECT_COLUMNS, "check"])
    moves_ = unexplained(pd.concat(found, ignore_index=True), read_splits(store))
    moves_ = moves_.drop_duplicates(["symbol", "date"], keep="last").sort_values(["date", "symbol"])
    for day, part in moves_.groupby("date"):
        table = pa.Table.from_pandas(part[SUSPECT_SCHEMA.names], schema=SUSPECT_SCHEMA, preserve_index=False)
        store.put(suspect_key(day, run_id), parquet_bytes(table.replace_schema_metadata(None)))
        log.warning("suspect=moves session=%s symbols=%s", day, ",".join(part["symbol"]))
    return moves_.assign(check=[split_check(d) for d in moves_["previous_date"]]).reset_index(drop=True)


_NO_SPLITS = pd.DataFrame(columns=["ticker", "execution_date"])
