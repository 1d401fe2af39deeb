"""The session manifest: gaps, subsets, concurrent updates."""

from __future__ import annotations

import datetime as dt

from condvest import calendar as cal
from condvest import manifest
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
