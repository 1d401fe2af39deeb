"""Control objects (manifest, basis, checkpoints, migration state and report, the resample's in-flight marker,
shard done records, the lake lock, run records) that are valid JSON of the wrong shape fail naming the object
(``CorruptObject``), or take the conservative reading their kind documents, never a bare ``AttributeError``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from condvest import dms, shards
from condvest.checkpoints import read_checkpoint
from condvest.errors import CorruptObject, ShardsIncomplete
from condvest.lake import BASIS_KEY, manifest_key
from condvest.lake_lock import UNREADABLE, lock_key, lock_status
from condvest.manifest import read_sessions
from condvest.migrate.state import STATE_KEY, load_state
from condvest.resample.state import INFLIGHT_KEY, read_inflight
from condvest.runs import read_records, record_key
from condvest.splits import read_basis
from condvest.storage import LocalStore, Store

#: JSON that parses, in shapes no writer produces
SHAPES = [b"[]", b"1", b'"text"', b"null", b'{"symbols": []}', b'{"sessions": []}', b'{"sessions": {"2026-01-02": 1}}']

_DAY = dt.date(2026, 1, 2)
READERS: dict[str, tuple[str, Callable[[Store], Any]]] = {
    "manifest": (manifest_key(2026), lambda s: read_sessions(s, _DAY, _DAY)),
    "basis": (BASIS_KEY, read_basis),
    "checkpoint": ("processing_metadata/silver_3d_checkpoint.json", lambda s: read_checkpoint(s, 3)),
    "migration state": (STATE_KEY, load_state),
    "migration report": (dms.REPORT_KEY, dms.load_report),
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path / "lake")


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_control_object_of_the_wrong_shape_fails_naming_it(store: Store, kind: str) -> None:
    key, read = READERS[kind]
    for raw in SHAPES:
        store.put(key, raw)
        with pytest.raises(CorruptObject) as info:
            read(store)
        assert key in str(info.value), (kind, raw)


def test_the_inflight_marker_of_any_shape_still_means_a_stopped_run(store: Store) -> None:
    """The marker's mere presence forces the next resample to rebuild in full: a marker of the wrong shape
    (``[]`` once read as an empty record, i.e. no marker) counts as a stopped run."""
    for raw in SHAPES:
        store.put(INFLIGHT_KEY, raw)
        marker = read_inflight(store)
        assert marker, raw


def test_a_shard_done_record_of_the_wrong_shape_is_an_incomplete_shard(store: Store) -> None:
    part = shards.part_key("resample", shards.Shard.parse("0/1", "g1"))
    for raw in SHAPES[:4]:
        store.put(part, raw)
        with pytest.raises(ShardsIncomplete, match="unreadable done record"):
            shards.read_parts(store, "resample", shards.Shard.parse("commit/1", "g1"))


def test_a_lock_object_or_run_record_of_the_wrong_shape_is_read_as_unreadable(store: Store, caplog) -> None:
    for n, raw in enumerate(SHAPES):
        store.put(lock_key("resample"), raw)
        rec, lease = lock_status(store, "resample")  # judged by its age alone: expired after one lease
        assert lease.live and "by the store's clock" in lease.why, raw
        if n < 4:  # not a JSON object
            assert rec == {"holder": UNREADABLE}
            store.put(record_key("r1"), raw)
            assert read_records(store) == []
            assert "index/r1.json" in caplog.text
