"""A validated migration retires the DMS export from reading; a changed export file brings it back."""

from __future__ import annotations

import datetime as dt
import logging

from condvest.lake import DMS_PREFIX
from condvest.migrate import MigrateParams, readable_export, run_migration
from condvest.offline.dms import write_dms_export
from condvest.offline.market import SyntheticMarket
from condvest.resample import ResampleParams, run_resample
from condvest.resample.state import list_sources
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches

NS = (3, 5)


def _lake(tmp_path) -> tuple[Settings, LocalStore]:
    store = LocalStore(tmp_path / "lake")
    market = SyntheticMarket(8, seed=5, full_history_share=0.5)
    write_dms_export(store, market, dt.date(2020, 1, 2), dt.date(2020, 9, 30), n_files=3, quirks=True)
    return Settings(lake_uri=str(store.root)), store


def test_a_validated_migration_stops_the_export_being_read(tmp_path, caplog):
    settings, store = _lake(tmp_path)
    assert readable_export(store), "before the migration the export is bronze's only copy"
    assert run_migration(settings, MigrateParams(), progress=False).passed
    assert readable_export(store) == []
    assert "dms" not in set(list_sources(store)["kind"])
    run_resample(settings, ResampleParams(NS), store=store)
    assert_silver_matches(store, NS)  # the migrated bronze alone gives the bars

    # a changed export object (same bytes, new etag) is read again, and the log says why
    changed = sorted(o.key for o in store.list(DMS_PREFIX + "/"))[1]
    store.put(changed, store.get(changed))
    with caplog.at_level(logging.WARNING):
        files = readable_export(store)
    assert len(files) == 3 and "changed_since_migration" in caplog.text
    assert "dms" in set(list_sources(store)["kind"])
    report = run_resample(settings, ResampleParams(NS), store=store)
    assert {r.mode for r in report.results} == {"full"}  # the export came back: recomputed, same bars
    assert_silver_matches(store, NS)
