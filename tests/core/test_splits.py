"""condvest.splits: which symbols are due for a rebase, and the two corporate-actions objects under races."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest

from condvest.errors import BadPayload
from condvest.splits import Basis, pending, read_basis, read_splits, record_basis, record_splits, splits_frame
from condvest.storage import LocalStore

SEEN = dt.datetime(2025, 10, 17, 22, tzinfo=dt.UTC)


def split(ticker: str, day: str, f: float = 1, t: float = 2) -> dict:
    return {"ticker": ticker, "execution_date": day, "split_from": f, "split_to": t, "id": f"{ticker}{day}"}


def test_pending_takes_splits_after_the_basis_up_to_the_day():
    known = splits_frame(
        [
            split("AAA", "2025-10-08"),
            split("AAA", "2025-10-15"),
            split("BBB", "2025-10-10"),
            split("CCC", "2025-10-20"),
        ],
        SEEN,
    )
    basis = {"AAA": Basis(dt.date(2025, 10, 9)), "BBB": Basis(dt.date(2025, 10, 10))}
    assert pending(known, basis, dt.date(2025, 10, 17)) == {"AAA": [dt.date(2025, 10, 15)]}
    assert pending(known, {}, dt.date(2025, 10, 17)) == {
        "AAA": [dt.date(2025, 10, 8), dt.date(2025, 10, 15)],
        "BBB": [dt.date(2025, 10, 10)],
    }  # an unknown basis: every split counts, the announced CCC (after the day) does not
    assert pending(known, {}, dt.date(2025, 10, 17), symbols=["BBB"]) == {"BBB": [dt.date(2025, 10, 10)]}
    with pytest.raises(BadPayload):
        splits_frame([{"ticker": "AAA", "execution_date": "soon", "split_from": 1, "split_to": 2}], SEEN)


def test_a_split_seen_again_keeps_its_first_seen_and_a_later_basis_wins(tmp_path):
    store = LocalStore(tmp_path)
    assert record_splits(store, splits_frame([split("AAA", "2025-10-08")], SEEN)) == 1
    later = SEEN + dt.timedelta(days=3)
    assert record_splits(store, splits_frame([split("AAA", "2025-10-08"), split("BBB", "2025-10-10")], later)) == 1
    got = read_splits(store)
    assert got["ticker"].tolist() == ["AAA", "BBB"]
    assert got["first_seen"].tolist() == [SEEN, later]
    record_basis(store, {"AAA": Basis(dt.date(2025, 10, 17), run_id="r2")})
    record_basis(store, {"AAA": Basis(dt.date(2025, 10, 9), run_id="r1")})  # a slower, older run
    assert read_basis(store)["AAA"].run_id == "r2"


def test_concurrent_writers_lose_nothing(tmp_path):
    store = LocalStore(tmp_path)
    symbols = [f"S{i:02d}" for i in range(12)]

    def write(sym: str) -> None:
        record_basis(store, {sym: Basis(dt.date(2025, 10, 17))})
        record_splits(store, splits_frame([split(sym, "2025-10-08")], SEEN))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(write, symbols))
    assert sorted(read_basis(store)) == symbols
    assert sorted(read_splits(store)["ticker"]) == symbols
