"""The owner of the lake's corporate actions: the splits 01_fetch has read, and each symbol's price basis.

``bronze/_corporate_actions/splits.parquet`` holds one row per (ticker, execution date) of Polygon's
splits reference: ``ticker, execution_date, split_from, split_to, id, first_seen``. A split seen again keeps
its first ``first_seen``; ratios are the newest read.

``bronze/_corporate_actions/basis.json`` holds, per symbol, the date as of which its bronze history is
split-adjusted (``{"version": 1, "symbols": {"AAPL": {"basis": "2025-10-17", "rebased_at": ..., "run_id":
..., "rows": 11023}}}``): every split executed on or before ``basis`` is reflected in every stored bar.
A symbol absent from it has an unknown basis (history migrated from the DMS export or fetched before
splits were tracked). A later basis never gives way to an earlier one.

Both objects are updated through ``storage.update_object`` (a conditional put over the version read,
retried from a fresh read when another writer got in between), so no writer's rows are lost.
``pending`` (pure) says which symbols need their history re-fetched.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest.errors import BadPayload, CorruptObject, ObjectNotFound
from condvest.lake import BASIS_KEY, SPLITS_KEY
from condvest.storage import Store, update_object

log = logging.getLogger(__name__)

__all__ = [
    "SPLITS_SCHEMA",
    "Basis",
    "basis_frame",
    "pending",
    "read_basis",
    "read_splits",
    "record_basis",
    "record_splits",
    "splits_frame",
]

SPLITS_SCHEMA = pa.schema(
    [
        ("ticker", pa.string()),
        ("execution_date", pa.date32()),
        ("split_from", pa.float64()),
        ("split_to", pa.float64()),
        ("id", pa.string()),
        ("first_seen", pa.timestamp("us", tz="UTC")),
    ]
)


def splits_frame(results: Sequence[Mapping[str, Any]], seen_at: dt.datetime) -> pd.DataFrame:
    """Polygon split records -> a frame in ``SPLITS_SCHEMA`` (pure); a malformed record is ``BadPayload``."""
    rows = []
    for r in results:
        try:
            day = dt.date.fromisoformat(str(r["execution_date"]))
            ratio = float(r["split_from"]), float(r["split_to"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadPayload(f"malformed split record {r!r}: {exc}"[:200], path="/v3/reference/splits") from None
        rows.append((str(r["ticker"]), day, *ratio, str(r.get("id") or ""), seen_at))
    df = pd.DataFrame(rows, columns=SPLITS_SCHEMA.names)
    return _typed(df)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    table = pa.Table.from_pandas(df[SPLITS_SCHEMA.names], schema=SPLITS_SCHEMA, preserve_index=False)
    return _to_pandas(table)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    df["execution_date"] = pd.to_datetime(df["execution_date"]).dt.date if len(df) else df["execution_date"]
    return df


def _parse_splits(key: str, data: bytes) -> pd.DataFrame:
    """The splits object as a frame; ``CorruptObject`` when it cannot be read (never overwritten)."""
    try:
        table = pq.read_table(io.BytesIO(data)).select(SPLITS_SCHEMA.names).cast(SPLITS_SCHEMA)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise CorruptObject(f"unreadable splits object: {exc}", key=key) from exc
    return _to_pandas(table)


def _splits_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(_typed(df), schema=SPLITS_SCHEMA, preserve_index=False), buf)
    return buf.getvalue()


def _no_splits() -> pd.DataFrame:
    return _to_pandas(SPLITS_SCHEMA.empty_table())


def read_splits(store: Store) -> pd.DataFrame:
    """Every split the lake knows, ordered by (execution_date, ticker); empty when none was ever read."""
    try:
        return _parse_splits(SPLITS_KEY, store.get(SPLITS_KEY))
    except ObjectNotFound:
        return _no_splits()


def record_splits(store: Store, new: pd.DataFrame) -> int:
    """Merge ``new`` (``SPLITS_SCHEMA`` columns) into the splits object; returns how many rows were new."""
    if new.empty:
        return 0
    done = update_object(
        store,
        SPLITS_KEY,
        partial(_merge_splits, new),
        read=_parse_splits,
        write=_splits_bytes,
        what="splits update",
    )
    if not done.written:
        return 0
    current = done.before if done.before is not None else _no_splits()
    added = len(done.after) - len(current)
    log.info("splits=recorded key=%s new=%d total=%d", SPLITS_KEY, added, len(done.after))
    return added


def _merge_splits(new: pd.DataFrame, current: pd.DataFrame | None) -> pd.DataFrame | None:
    """``current`` with ``new`` merged in (a split seen again keeps its first ``first_seen``; ratios are the
    newest read); ``None`` when that changes nothing."""
    current = current if current is not None else _no_splits()
    key = ["ticker", "execution_date"]
    both = pd.concat([current.assign(_old=1), new.assign(_old=0)], ignore_index=True)
    first = both.groupby(key)["first_seen"].min()
    merged = both.sort_values([*key, "_old"]).drop_duplicates(key, keep="first").drop(columns="_old")
    merged["first_seen"] = [first[(t, d)] for t, d in zip(merged["ticker"], merged["execution_date"], strict=True)]
    merged = merged.sort_values(["execution_date", "ticker"]).reset_index(drop=True)
    if len(merged) == len(current) and _same(current, merged):
        return None
    return merged


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = ["ticker", "execution_date", "split_from", "split_to"]
    return a[cols].reset_index(drop=True).equals(b[cols].reset_index(drop=True))


@dataclass(frozen=True)
class Basis:
    """``basis``: every split executed on or before it is reflected in the symbol's bronze history."""

    basis: dt.date
    rebased_at: str = ""
    run_id: str = ""
    rows: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "basis": self.basis.isoformat()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Basis:
        return cls(
            dt.date.fromisoformat(str(d["basis"])),
            str(d.get("rebased_at", "")),
            str(d.get("run_id", "")),
            int(d.get("rows", 0)),
        )


def _parse_basis(key: str, raw: bytes) -> dict[str, Basis]:
    """The basis object per symbol; ``CorruptObject`` when it cannot be read (never overwritten)."""
    try:
        doc = json.loads(raw)
        return {s: Basis.from_json(e) for s, e in doc["symbols"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # AttributeError: JSON of another shape
        raise CorruptObject(f"unreadable basis object: {exc}", key=key) from exc


def _basis_bytes(entries: Mapping[str, Basis]) -> bytes:
    doc = {"version": 1, "symbols": {s: entries[s].to_json() for s in sorted(entries)}}
    return json.dumps(doc, separators=(",", ":")).encode()


def read_basis(store: Store) -> dict[str, Basis]:
    """Per symbol, the basis of its bronze history (a symbol not listed: unknown)."""
    try:
        return _parse_basis(BASIS_KEY, store.get(BASIS_KEY))
    except ObjectNotFound:
        return {}


def record_basis(store: Store, entries: Mapping[str, Basis]) -> None:
    """Merge ``entries`` into the basis object; per symbol the later basis wins."""
    if not entries:
        return
    update_object(
        store, BASIS_KEY, partial(_merge_basis, entries), read=_parse_basis, write=_basis_bytes, what="basis update"
    )
    log.info("basis=recorded key=%s symbols=%d", BASIS_KEY, len(entries))


def _merge_basis(entries: Mapping[str, Basis], current: dict[str, Basis] | None) -> dict[str, Basis]:
    out = dict(current or {})
    for sym, b in entries.items():
        if sym not in out or b.basis >= out[sym].basis:
            out[sym] = b
    return out


def pending(
    splits: pd.DataFrame,
    basis: Mapping[str, Basis],
    upto: dt.date,
    *,
    since: dt.date | None = None,
    symbols: Sequence[str] | None = None,
) -> dict[str, list[dt.date]]:
    """Per symbol, the splits (execution dates) its stored history does not reflect yet: executed on or before
    ``upto``, on or after ``since`` (None: any), and after the symbol's basis (an unknown basis: any). Pure."""
    out: dict[str, list[dt.date]] = {}
    wanted = None if symbols is None else set(symbols)
    for sym, day in zip(splits["ticker"], splits["execution_date"], strict=True):
        if day > upto or (since is not None and day < since) or (wanted is not None and sym not in wanted):
            continue
        if sym in basis and day <= basis[sym].basis:
            continue
        out.setdefault(sym, []).append(day)
    return {s: sorted(set(days)) for s, days in sorted(out.items())}


def basis_frame(splits: pd.DataFrame, basis: Mapping[str, Basis]) -> pd.DataFrame:
    """For monitoring: per symbol with a known basis or a known split, its basis date, when it was rebased,
    and the splits newer than its basis (the ones its stored history does not reflect). Pure."""
    names = sorted(set(basis) | set(splits["ticker"]))
    rows = []
    for sym in names:
        b = basis.get(sym)
        mine = splits[splits["ticker"] == sym]
        newer = mine if b is None else mine[mine["execution_date"] > b.basis]
        text = ", ".join(
            f"{d.isoformat()} {_num(f)}:{_num(t)}"
            for d, f, t in zip(newer["execution_date"], newer["split_from"], newer["split_to"], strict=True)
        )
        rows.append(
            {
                "symbol": sym,
                "basis": b.basis.isoformat() if b else "unknown",
                "rebased_at": b.rebased_at if b else "",
                "rows": b.rows if b else None,
                "newer_splits": text,
                "status": "behind" if text else "current",
            }
        )
    return pd.DataFrame(rows, columns=["symbol", "basis", "rebased_at", "rows", "newer_splits", "status"])


def _num(x: float) -> str:
    return f"{x:g}"
