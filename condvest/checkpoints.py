"""The silver checkpoints: one commit record per interval, ``processing_metadata/silver_{N}d_checkpoint.json``.

02_resample writes them last (the commit record of a run: the state it names is what silver holds);
05_monitoring and the runner's ``--shards auto`` read them. So they live here, below the stages (pandas is
imported on first use: the runner's command line reads checkpoints without loading it otherwise).

    read_checkpoint(store, n, legacy=None) -> dict | None   the interval's commit record (None: none, or the
                                                            previous pipeline's)
    all_checkpoints(store) -> list[dict]                    every readable checkpoint (read concurrently)
    write_checkpoint(store, n, state, mode, rows_read, run_id, etag) -> dict
                                                            the commit record, written only over version ``etag``
    checkpoint_table(settings) -> pandas.DataFrame          one row per checkpoint, in interval order
    checkpoint_frame(docs) -> pandas.DataFrame              the same from checkpoints already read
    is_legacy_checkpoint(doc) -> bool                       written by the previous pipeline (no state)

A checkpoint names the resampler's state (``state``, ``tail``, ``source_watermark``) and counts the bars
(``bars``, ``complete_bars``, ``partial_bars``, ``symbols``, ``last_processed_session``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import METADATA_PREFIX, checkpoint_key
from condvest.settings import Settings
from condvest.storage import Store, open_store, put_if_unchanged

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointState",
    "all_checkpoints",
    "checkpoint_frame",
    "checkpoint_table",
    "is_legacy_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]

#: keys of the previous pipeline's checkpoints (``silver_{N}d_checkpoint.json``), which name no state
_LEGACY_CHECKPOINT_KEYS = frozenset({"last_processed_date", "last_run_timestamp", "total_records_processed"})


class CheckpointState(Protocol):
    """What a checkpoint records of the resampler's state (``condvest.resample.state.SilverState`` is one):
    its id, the symbols frame (``n`` sessions and ``last_date`` per symbol), the sources it read, the compaction
    journal cursor and the tail length."""

    run_id: str
    symbols: pd.DataFrame
    sources: pd.DataFrame
    journal: str | None
    tail_len: int


def is_legacy_checkpoint(doc: object) -> bool:
    """True for a checkpoint written by the previous pipeline (``last_processed_date``, no state)."""
    return isinstance(doc, dict) and "state" not in doc and bool(_LEGACY_CHECKPOINT_KEYS & set(doc))


def read_checkpoint(store: Store, n: int, legacy: list[int] | None = None) -> dict | None:
    """The checkpoint of interval ``n``; ``None`` when there is none or when it is the previous pipeline's
    (its interval is then rebuilt in full; ``n`` is added to ``legacy``)."""
    key = checkpoint_key(n)
    try:
        doc = json.loads(store.get(key))
    except ObjectNotFound:
        return None
    except ValueError as exc:
        raise CorruptObject(f"unreadable checkpoint: {exc}", key=key) from exc
    if is_legacy_checkpoint(doc):
        log.info("checkpoint=previous_pipeline key=%s (rebuilt in full)", key)
        if legacy is not None:
            legacy.append(n)
        return None
    if not isinstance(doc, dict):
        raise CorruptObject(f"checkpoint is JSON but not an object ({type(doc).__name__})", key=key)
    if doc.get("status") != "complete" or "state" not in doc:
        raise CorruptObject("checkpoint is not a complete commit record; run with force_full_resample=True", key=key)
    return doc


def all_checkpoints(store: Store) -> list[dict]:
    """Every checkpoint that can be read, in key order (one that vanished or is not a JSON object is left out).
    One listing, then the objects read concurrently (each a round trip on S3)."""
    keys = [o.key for o in store.list(f"{METADATA_PREFIX}/silver_") if o.key.endswith("_checkpoint.json")]

    def read(key: str) -> object:
        try:
            return json.loads(store.get(key))
        except (ValueError, ObjectNotFound):
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(store.write_threads, len(keys)))) as pool:
        return [doc for doc in pool.map(read, keys) if isinstance(doc, dict)]


def write_checkpoint(
    store: Store, n: int, state: CheckpointState, mode: str, rows_read: int, run_id: str, etag: str | None
) -> dict:
    """The interval's commit record, written last and only over the version this run read at its start
    (``etag``; ``None``: there was none): a checkpoint another run wrote meanwhile is never overwritten
    (``PreconditionFailed``)."""
    import pandas as pd

    counts = state.symbols["n"].astype("int64") if len(state.symbols) else pd.Series([], dtype="int64")
    bars = int(((counts + n - 1) // n).sum())
    complete = int((counts // n).sum())
    last = max(state.symbols["last_date"]) if len(state.symbols) else None
    doc = {
        "interval": n,
        "status": "complete",
        "mode": mode,
        "last_processed_session": last.isoformat() if last else None,
        "bars": bars,
        "complete_bars": complete,
        "partial_bars": bars - complete,
        "symbols": len(state.symbols),
        "rows_read": rows_read,
        "source_watermark": {"state": state.run_id, "objects": len(state.sources), "journal": state.journal},
        "state": state.run_id,
        "tail": state.tail_len,
        "run_id": run_id,
        "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    put_if_unchanged(store, checkpoint_key(n), json.dumps(doc, indent=1).encode(), etag)
    return doc


def checkpoint_table(settings: Settings, *, store: Store | None = None, with_times: bool = False) -> pd.DataFrame:
    """One row per checkpoint (interval order); ``with_times`` adds run id and update time."""
    return checkpoint_frame(all_checkpoints(store or open_store(settings=settings)), with_times=with_times)


def checkpoint_frame(docs: list[dict], *, with_times: bool = False) -> pd.DataFrame:
    """``checkpoint_table`` of checkpoints already read (``all_checkpoints``)."""
    import pandas as pd

    cols = ["interval", "last_processed_session", "bars", "complete_bars", "partial_bars", "symbols", "status"]
    if with_times:
        cols += ["mode", "rows_read", "run_id", "updated_at"]
    rows = sorted(docs, key=lambda c: c.get("interval", 0))
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
