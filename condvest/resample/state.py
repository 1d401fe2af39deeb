"""What the silver layer was built from: the resampler's state, and how bronze changed since.

A committed resample run leaves a state folder ``processing_metadata/resample_state/<run_id>/`` that its
checkpoints name (the checkpoint is the commit record; a folder no checkpoint names is garbage):

    sources.parquet   every object read: key, etag, symbol, date (daily files), kind, folded
    symbols.parquet   per symbol: sessions n, first_date, last_date
    tail.parquet      per symbol the last ``tail`` deduplicated sessions (index i, date, OHLCV): enough rows
                      to rebuild any trailing bar without reading history again

``diff_sources`` compares the current bronze listing with a state and says, per symbol, the earliest
session date whose content may have changed (``MIN_DATE``: anything may have) and whether the change is
a pure append of new daily files (read only those files). Compaction journals (``bronze/_compaction/``)
explain rewritten ``data.parquet`` objects: a journal entry whose old etag matches the state says the new
object holds the old one plus the folded daily files, so nothing needs reading again.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest.dms import readable_export
from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import BRONZE_PREFIX, METADATA_PREFIX, parse_bronze_key
from condvest.storage import Store

log = logging.getLogger(__name__)

STATE_PREFIX = f"{METADATA_PREFIX}/resample_state/"
JOURNAL_PREFIX = "bronze/_compaction/"
MIN_DATE = dt.date(1, 1, 1)
SOURCE_COLUMNS = ["key", "etag", "symbol", "date", "kind", "folded"]
#: bytes a bar takes in a history object or a DMS export file (parquet; 38-48 B measured on the seed's lakes, so
#: this errs high): ``list_sources`` estimates the rows behind a listing from its sizes (``attrs["rows_estimate"]``)
STORED_ROW_BYTES = 36
TAIL_COLUMNS = ["symbol", "i", "date", "open", "high", "low", "close", "volume"]


#: written before a run's first silver write, deleted after its last checkpoint: a run that finds it knows that
#: a run stopped in between, leaving month files that no checkpoint describes
INFLIGHT_KEY = f"{METADATA_PREFIX}/resample_inflight.json"


def mark_inflight(store: Store, run_id: str) -> None:
    doc = {"run_id": run_id, "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    store.put(INFLIGHT_KEY, json.dumps(doc).encode())


def read_inflight(store: Store) -> dict | None:
    """The in-flight record of a run that stopped between its silver writes and its checkpoints, or None."""
    try:
        raw = store.get(INFLIGHT_KEY)
    except ObjectNotFound:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    # unreadable or of another shape (``[]`` would read as an empty, false record): a stopped run all the same
    return dict(doc) if isinstance(doc, dict) and doc else {"run_id": "<unreadable>"}


def state_key(run_id: str, part: str) -> str:
    return f"{STATE_PREFIX}{run_id}/{part}.parquet"


def watch_key(run_id: str) -> str:
    """Where a state keeps what it saw of bronze's change log (``condvest.changes.Watch``)."""
    return f"{STATE_PREFIX}{run_id}/watch.json"


def journal_key(stamp: str, run_id: str) -> str:
    return f"{JOURNAL_PREFIX}{stamp}-{run_id}.json"


def list_sources(store: Store) -> pd.DataFrame:
    """Every bronze object (daily and history) plus the DMS export files still to be read (none once a
    validated migration matches them: ``condvest.dms.readable_export``), as a sources frame; its
    ``attrs["rows_estimate"]`` is the rows they hold, estimated from their sizes (it sizes the full rebuild's
    symbol batches)."""
    rows, stored = [], 0
    for o in store.list(f"{BRONZE_PREFIX}/symbol="):
        parsed = parse_bronze_key(o.key)
        if parsed is None:
            continue
        sym, day = parsed
        rows.append((o.key, o.etag, sym, day, "daily" if day else "history", False))
        stored += 1 if day else o.size // STORED_ROW_BYTES  # a daily file holds one row
    for o in readable_export(store):
        rows.append((o.key, o.etag, None, None, "dms", False))
        stored += o.size // STORED_ROW_BYTES
    df = _sources_frame(rows)
    df.attrs["rows_estimate"] = stored
    return df


def sources_after(store: Store, base: pd.DataFrame, objects: dict[str, str | None]) -> pd.DataFrame:
    """The sources frame ``list_sources`` would give now, from a state's ``base`` and the bronze objects changed
    since (key -> etag, ``None``: gone), without listing bronze; the DMS export files as ``list_sources`` finds
    them (a listing of the export's own prefix)."""
    keep = base[(base["kind"] != "dms") & ~base["key"].isin(list(objects))]
    rows = []
    for key, etag in objects.items():
        parsed = parse_bronze_key(key)
        if etag is None or parsed is None:
            continue
        sym, day = parsed
        rows.append((key, etag, sym, day, "daily" if day else "history", False))
    rows += [(o.key, o.etag, None, None, "dms", False) for o in readable_export(store)]
    df = pd.concat([keep[SOURCE_COLUMNS], _sources_frame(rows)], ignore_index=True)
    df["folded"] = False  # as a listing gives it (a run reads ``folded`` from its state)
    return _sources_frame(list(df.sort_values("key", kind="stable").itertuples(index=False, name=None)))


def _sources_frame(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=SOURCE_COLUMNS)
    return df.astype({"key": "object", "etag": "object", "symbol": "object", "kind": "object", "folded": "bool"})


def latest_journal(store: Store) -> str | None:
    last = None
    for o in store.list(JOURNAL_PREFIX):
        last = o.key
    return last


@dataclass
class SilverState:
    run_id: str
    sources: pd.DataFrame
    symbols: pd.DataFrame  # symbol, n, first_date, last_date
    tail: pd.DataFrame  # TAIL_COLUMNS
    tail_len: int
    journal: str | None = None

    def save(self, store: Store) -> None:
        """The three parts, written concurrently (three round trips at once on S3)."""
        items = []
        for part, df in (("sources", self.sources), ("symbols", self.symbols), ("tail", self.tail)):
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), buf)
            items.append((state_key(self.run_id, part), buf.getvalue()))
        store.put_many(items, threads=len(items))

    @classmethod
    def load(cls, store: Store, run_id: str, tail_len: int, journal: str | None) -> SilverState:
        parts = {}
        names = ("sources", "symbols", "tail")
        with ThreadPoolExecutor(max_workers=len(names)) as pool:  # three round trips at once on S3
            raw = dict(zip(names, pool.map(lambda p: _get_or_none(store, state_key(run_id, p)), names), strict=True))
        for part in names:
            key = state_key(run_id, part)
            try:
                if raw[part] is None:
                    raise ObjectNotFound(key=key)
                parts[part] = pq.read_table(io.BytesIO(raw[part])).to_pandas()
            except ObjectNotFound:
                raise CorruptObject(
                    "resample state named by a checkpoint is missing; run with force_full_resample=True", key=key
                ) from None
            except (pa.ArrowException, OSError) as exc:
                raise CorruptObject(f"unreadable resample state: {exc}", key=key) from exc
        for df in parts.values():
            for col in ("date", "first_date", "last_date"):
                if col in df:
                    df[col] = pd.to_datetime(df[col]).dt.date if len(df) else df[col].astype("object")
        return cls(run_id, parts["sources"], parts["symbols"], parts["tail"], tail_len, journal)


def _get_or_none(store: Store, key: str) -> bytes | None:
    try:
        return store.get(key)
    except ObjectNotFound:
        return None


def prune_states(store: Store, keep: set[str]) -> int:
    """Delete state folders that no checkpoint names."""
    doomed = [o.key for o in store.list(STATE_PREFIX) if o.key[len(STATE_PREFIX) :].split("/")[0] not in keep]
    return store.delete_many(doomed)


@dataclass
class Changes:
    """Per symbol: the earliest date that may have changed; ``append`` symbols only gained later sessions."""

    since: dict[str, dt.date] = field(default_factory=dict)
    append: set[str] = field(default_factory=set)
    new_files: list[str] = field(default_factory=list)  # daily files the append symbols need
    dms_changed: bool = False

    @property
    def symbols(self) -> set[str]:
        return set(self.since)


def apply_journals(store: Store, state: SilverState) -> tuple[str | None, dict[str, dt.date]]:
    """Fold compaction journals written after the state's cursor into ``state.sources`` (in place).

    Returns the new cursor and, per symbol, the earliest date a journal brought in that the state had not
    seen (a folded daily file the state never read, or read with another etag).
    """
    cursor, extra = state.journal, {}
    src = state.sources.set_index("key", drop=False)
    for o in store.list(JOURNAL_PREFIX, start_after=state.journal):
        try:
            doc = json.loads(store.get(o.key))
            if not isinstance(doc, dict) or not isinstance(doc.get("symbols"), dict):
                raise ValueError("not an object with 'symbols'")
        except ValueError as exc:
            raise CorruptObject(f"unreadable compaction journal: {exc}", key=o.key) from exc
        for sym, entry in doc["symbols"].items():
            hist = entry["history_key"]
            have = src.at[hist, "etag"] if hist in src.index else None
            if have != entry["old_etag"]:
                continue  # the state did not see the object compaction started from: diff reports it
            if hist in src.index:
                src.at[hist, "etag"] = entry["new_etag"]
            else:
                src.loc[hist] = [hist, entry["new_etag"], sym, None, "history", False]
            for key, etag in entry["folded"].items():
                parsed = parse_bronze_key(key)
                day = parsed[1] if parsed else None
                if key not in src.index or src.at[key, "etag"] != etag:
                    if day is not None:
                        extra[sym] = min(extra.get(sym, day), day)
                src.loc[key] = [key, etag, sym, day, "daily", True]
        cursor = o.key
    state.sources = src.reset_index(drop=True)
    return cursor, extra


def diff_sources(old: SilverState, now: pd.DataFrame, extra: dict[str, dt.date]) -> Changes:
    """How bronze changed between ``old`` (journals applied) and the listing ``now``."""
    ch = Changes()
    o = old.sources.set_index("key")
    n = now.set_index("key")
    o_dms = o[o["kind"] == "dms"]["etag"].to_dict()
    n_dms = n[n["kind"] == "dms"]["etag"].to_dict()
    ch.dms_changed = o_dms != n_dms
    o, n = o[o["kind"] != "dms"], n[n["kind"] != "dms"]
    joined = o[["etag", "symbol", "date", "kind", "folded"]].join(
        n[["etag", "symbol", "date", "kind"]], how="outer", lsuffix="_o", rsuffix="_n"
    )
    added = joined["etag_o"].isna()
    removed = joined["etag_n"].isna()
    modified = ~added & ~removed & (joined["etag_o"] != joined["etag_n"])
    gone_folded = removed & joined["folded"].fillna(False).astype(bool)
    changed = joined[added | modified | (removed & ~gone_folded)]
    last = dict(zip(old.symbols["symbol"], old.symbols["last_date"], strict=True))
    append_files: dict[str, list[str]] = {}
    cols = [changed[c].tolist() for c in ("symbol_n", "symbol_o", "kind_n", "kind_o", "date_n", "date_o")]
    for key, is_added, sym_n, sym_o, kind_n, kind_o, date_n, date_o in zip(
        changed.index, added[changed.index].tolist(), *cols, strict=True
    ):
        present = isinstance(kind_n, str)
        sym, kind = (sym_n, kind_n) if present else (sym_o, kind_o)
        day = date_n if present else date_o
        since = MIN_DATE if kind == "history" or sym not in last else day
        if kind == "daily" and is_added and sym in last and day > last[sym]:
            append_files.setdefault(sym, []).append(key)
        ch.since[sym] = min(ch.since.get(sym, since), since)
    for sym, day in extra.items():
        ch.since[sym] = min(ch.since.get(sym, day), day)
    for sym, files in append_files.items():
        if sym not in extra and ch.since[sym] > last[sym]:  # nothing but new later daily files
            ch.append.add(sym)
            ch.new_files.extend(files)
    return ch
