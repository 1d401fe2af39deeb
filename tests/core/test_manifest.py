"""The session manifest: gaps, subsets, concurrent updates."""

from __future__ import annotations

import datetime as dt

import pytest

from condvest import calendar as cal
from condvest import manifest
from condvest.checkpoints import all_checkpoints, read_checkpoint
from condvest.errors import CorruptObject
from condvest.lake import checkpoint_key, manifest_key
from condvest.storage import LocalStore


def test_manifest_gap_detection_and_concurrent_updates(tmp_path):
    store = LocalStore(tmp_path)
    sessions = cal.sessions_between(dt.date(2025, 12, 22), dt.date(2026, 1, 6))
    e = manifest.SessionEntry("all", 10, 10, "grouped")
    manifest.record_sessions(store, {sessions[0]: e, sessions[-1]: e})
    assert manifest.missing_sessions(store, sessions) == sessions[1:-1]
    # subsets: a session fetched for AAPL only is complete for AAPL, not for everyone
    manifest.record_sessions(store, {sessions[1]: manifest.SessionEntry(("AAPL",), 1, 1, "range")})
    assert sessions[1] not in manifest.missing_sessions(store, sessions, ["AAPL"])
    assert sessions[1] in manifest.missing_sessions(store, sessions)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: manifest.record_sessions(store, {d: e}), sessions))
    assert manifest.missing_sessions(store, sessions) == []
    # two years, two objects; nothing else is listed
    assert sorted(o.key for o in store.list("bronze/")) == [
        "bronze/_manifest/sessions_2025.json",
        "bronze/_manifest/sessions_2026.json",
    ]


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"3"])
def test_control_objects_that_are_json_of_the_wrong_shape_fail_naming_the_object(tmp_path, body):
    store = LocalStore(tmp_path / "lake")
    store.put(manifest_key(2024), body)
    with pytest.raises(CorruptObject) as err:
        manifest.read_sessions(store, dt.date(2024, 1, 2), dt.date(2024, 1, 5))
    assert err.value.key == manifest_key(2024)
    store.put(checkpoint_key(5), body)
    with pytest.raises(CorruptObject) as err:
        read_checkpoint(store, 5)
    assert err.value.key == checkpoint_key(5)
    assert all_checkpoints(store) == []  # monitoring's reader leaves it out instead of failing
