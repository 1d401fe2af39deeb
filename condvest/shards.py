"""Sharding by symbol: one stage's work split over N processes (or a Batch array job), then one commit.

    Shard.parse("2/4", "G")       shard 2 of 4 (0-based) of the sharded run G: stages its own part
    Shard.parse("commit/4", "G")  the commit of run G: checks all 4 parts, writes the shared objects
    shard_of("AAPL", 4) -> 0..3   the stable shard of a symbol (CRC-32 of its UTF-8 name, the same everywhere)

A shard handles the symbols whose stable hash falls in it and writes only its own objects (a symbol's bronze
history) or its part of the staging area ``processing_metadata/shards/<stage>/<group>/``; its part ends with a
done record ``done/part-<i>.json``, written last. The commit runs after every shard (Batch: ``dependsOn`` the
array job; locally: after the N processes): it refuses, writing nothing, unless all N done records are there
and agree (``ShardsIncomplete``), then writes the shared objects (silver month files, the manifest, the
checkpoints last) and removes the staging area. A shard that ran again (a Batch retry) first removes its own
old part, so what it stages is only ever its latest attempt.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from condvest.errors import ObjectNotFound, ParameterError, ShardsIncomplete
from condvest.lake import METADATA_PREFIX
from condvest.params import run_id as check_run_id
from condvest.storage import Store

SHARDS_PREFIX = f"{METADATA_PREFIX}/shards"
MAX_SHARDS = 10_000
#: keys a thread deletes at once when a staging area is cleared (an S3 batch delete takes up to 1,000)
_DELETE_CHUNK = 1000
_SHARD_RE = re.compile(r"^\s*(\d+|commit)\s*/\s*(\d+)\s*$")


def shard_of(symbol: str, count: int) -> int:
    """The shard (0 … count-1) of ``symbol``: stable across processes, machines and Python versions."""
    return zlib.crc32(symbol.encode()) % count


@dataclass(frozen=True)
class Shard:
    """One part of a sharded run (``index`` 0 … count-1), or its commit (``index`` ``None``)."""

    index: int | None
    count: int
    group: str

    @property
    def is_commit(self) -> bool:
        return self.index is None

    @property
    def label(self) -> str:
        return f"{'commit' if self.index is None else self.index}/{self.count}"

    def holds(self, symbol: str) -> bool:
        """True when ``symbol`` belongs to this shard (a commit holds none)."""
        return self.index is not None and shard_of(symbol, self.count) == self.index

    @staticmethod
    def parse(value: object, group: object, name: str = "shard") -> Shard | None:
        """``""``/``None``: not sharded. ``"I/N"`` (0 <= I < N) or ``"commit/N"``, with the group id every part
        of the run shares (``shard_group``); ``ParameterError`` naming the parameter otherwise."""
        if value is None or value in ("", "None"):
            if group not in (None, "", "None"):
                raise ParameterError("shard_group is given but shard is not", parameter="shard")
            return None
        m = _SHARD_RE.match(value) if isinstance(value, str) else None
        if m is None:
            raise ParameterError(f"expected I/N (0 <= I < N) or commit/N, got {value!r}", parameter=name)
        count = int(m.group(2))
        if not 1 <= count <= MAX_SHARDS:
            raise ParameterError(f"the shard count must be 1 to {MAX_SHARDS}, got {count}", parameter=name)
        index = None if m.group(1) == "commit" else int(m.group(1))
        if index is not None and index >= count:
            raise ParameterError(f"shard {index} of {count}: the index must be below {count}", parameter=name)
        if group in (None, "", "None"):
            problem = "a shard needs shard_group, the id its parts and commit share"
            raise ParameterError(problem, parameter="shard_group")
        return Shard(index, count, check_run_id(group, "shard_group"))


def staging_prefix(stage: str, group: str) -> str:
    return f"{SHARDS_PREFIX}/{stage}/{group}/"


def part_key(stage: str, shard: Shard) -> str:
    return f"{staging_prefix(stage, shard.group)}done/part-{shard.index}.json"


def clear_part(store: Store, stage: str, shard: Shard, part_keys: list[str]) -> None:
    """Before a shard stages anything: its done record goes first, then what an earlier attempt staged."""
    store.delete_many([part_key(stage, shard)])
    store.delete_many(part_keys)


def write_part(store: Store, stage: str, shard: Shard, doc: dict[str, Any]) -> None:
    """The shard's done record, written after everything it staged."""
    body = {"shard": shard.index, "count": shard.count, "group": shard.group, **doc}
    body["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    store.put(part_key(stage, shard), json.dumps(body, indent=1, default=str).encode())


def read_parts(store: Store, stage: str, commit: Shard) -> list[dict[str, Any]]:
    """Every shard's done record, in shard order; ``ShardsIncomplete`` when one is missing or disagrees."""
    out = []
    for i in range(commit.count):
        key = part_key(stage, Shard(i, commit.count, commit.group))
        try:
            doc = json.loads(store.get(key))
        except ObjectNotFound:
            raise ShardsIncomplete(
                "this shard has not finished (no done record): it failed, was killed or has not run",
                group=commit.group,
                shard=f"{i}/{commit.count}",
            ) from None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):  # not JSON, or JSON of another shape
            raise ShardsIncomplete("unreadable done record", group=commit.group, shard=f"{i}/{commit.count}")
        if doc.get("count") != commit.count:
            raise ShardsIncomplete(
                f"this shard ran as one of {doc.get('count')}, the commit expects {commit.count}",
                group=commit.group,
                shard=f"{i}/{commit.count}",
            )
        out.append(doc)
    return out


def clear_staging(store: Store, stage: str, group: str) -> int:
    """Remove a sharded run's staging area (after its commit): thousands of objects at 16 shards, deleted in
    chunks on the store's writer threads (batched deletes on S3, a file each on a disk)."""
    keys = [o.key for o in store.list(staging_prefix(stage, group))]
    chunks = [keys[i : i + _DELETE_CHUNK] for i in range(0, len(keys), _DELETE_CHUNK)]
    if len(chunks) <= 1:
        return store.delete_many(keys)
    with ThreadPoolExecutor(max_workers=min(len(chunks), store.write_threads)) as pool:
        return sum(pool.map(store.delete_many, chunks))
