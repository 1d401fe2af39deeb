"""05_monitoring's suspect moves and Postgres-against-bronze section (issue 21 items 1 and 2), on a local lake."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from condvest.fetch.suspects import find_suspects
from condvest.monitoring import snapshot as monitoring
from condvest.settings import MoveLimits, Settings
from condvest.splits import record_splits, splits_frame
from condvest.storage import LocalStore

AS_OF = dt.date(2025, 10, 17)
D1, D2 = dt.date(2025, 10, 15), dt.date(2025, 10, 16)


def test_a_suspect_move_is_listed_with_its_split_check_until_a_recorded_split_explains_it(tmp_path):
    settings = Settings(lake_uri=str(tmp_path / "lake"), runs_uri=str(tmp_path / "runs"), as_of=AS_OF)
    store = LocalStore(settings.lake_uri)
    closes = pd.DataFrame(
        {"symbol": ["UP", "UP", "FLAT", "FLAT"], "date": [D1, D2, D1, D2], "close": [10.0, 21.0, 10.0, 10.1]}
    )
    found = find_suspects(store, [closes], [], MoveLimits(), "fetch-20251016-230000-abcd")
    assert found["symbol"].tolist() == ["UP"]
    params = monitoring.MonitoringParams(read_postgres=False)
    snap = monitoring.collect(settings, params)
    table = monitoring.truth_section(snap).items[0][1]
    assert table[["date", "symbol", "ratio", "check"]].values.tolist() == [
        [D2, "UP", 2.1, f"python -m runner run 01_fetch -p rebase {D1}"]
    ]
    assert snap.summary()["suspect_moves"] == 1 and snap.overview().loc["truth", "state"] == "look"
    assert "1 suspect move(s)" in snap.overview().loc["truth", "detail"]
    assert "never compared with bronze" in snap.overview().loc["truth", "detail"]

    # the split check ran and recorded a 2-for-1... reverse split the lake did not know of: the move is explained
    split = {"ticker": "UP", "execution_date": D2.isoformat(), "split_from": 2, "split_to": 1, "id": "x"}
    record_splits(store, splits_frame([split], dt.datetime(2025, 10, 17, tzinfo=dt.UTC)))
    later = monitoring.collect(settings, params)
    assert later.summary()["suspect_moves"] == 0 and monitoring.truth_section(later).items[0][1] == "none"
