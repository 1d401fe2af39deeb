"""05_monitoring's Runs section lists the failed runs with the line that raised, and monitoring warns when bronze
changed after the last resample (README fault row 47), through collect() on a real local lake."""

from __future__ import annotations

import datetime as dt
import json

from condvest.lake import checkpoint_key
from condvest.manifest import ALL, SessionEntry, record_sessions
from condvest.monitoring import MonitoringParams, bronze_changed_after_resample, collect, failed_runs
from condvest.runs import append_run, read_index
from condvest.settings import Settings
from condvest.splits import Basis
from condvest.storage import LocalStore
from runner.result import CellError
from tests.monitoring.test_monitoring import AS_OF, fill_lake, record_runs, settings_for


def test_failed_runs_name_the_cell_and_the_line_newest_first(tmp_path):
    runs = str(tmp_path / "runs")
    record_runs(runs)
    df = failed_runs(read_index(Settings(runs_uri=runs)))
    assert list(df["run_id"]) == ["run-4", "run-1"] and list(df["notebook"]) == ["04_retention", "01_fetch"]
    assert df["cell"][0] == "cell 4" and df["line"][0] == "report.raise_for_status()"
    assert df["error"][0] == "FetchFailed: sessions failed: 2025-01-13"
    assert df["html_url"][0].endswith("run-4/04_retention.html")
    assert failed_runs(read_index(Settings(runs_uri=str(tmp_path / "none")))).empty


def test_a_failed_run_with_its_line_shows_the_line(tmp_path):
    runs = str(tmp_path / "runs")
    record_runs(runs)
    err = CellError(3, 2, "import math", "ZeroDivisionError", "division by zero", "ratio = x / divisor", 2, "c")
    append_run(
        LocalStore(runs),
        {"run_id": "run-9", "notebook": "02_resample.ipynb", "status": "failed", "error": err.as_dict(),
         "started_at": "2025-01-16T10:00:00+00:00", "finished_at": "2025-01-16T10:00:01+00:00", "duration_s": 1.0},
    )  # fmt: skip
    df = failed_runs(read_index(Settings(runs_uri=runs)), limit=1)
    assert df.to_dict("records")[0] | {"html_url": ""} == {
        "started_at": "2025-01-16 10:00",
        "notebook": "02_resample",
        "run_id": "run-9",
        "cell": "cell 3, line 2",
        "line": "ratio = x / divisor",
        "error": "ZeroDivisionError: division by zero",
        "pipeline": "",
        "html_url": "",
    }


def _checkpoint(n: int, updated: str) -> dict:
    return {"interval": n, "updated_at": updated, "last_processed_session": "2025-01-15"}


def test_bronze_written_after_the_oldest_checkpoint_is_named():
    day = dt.date(2025, 1, 15)
    cps = [_checkpoint(3, "2025-01-15T22:10:00+00:00"), _checkpoint(5, "2025-01-15T22:11:00+00:00")]
    before = {day: SessionEntry("all", 2, 2, "grouped", "r1", "2025-01-15T22:00:00+00:00")}
    assert bronze_changed_after_resample(before, {}, cps) == ""
    after = {day: SessionEntry("all", 2, 2, "grouped", "r2", "2025-01-15T22:10:30+00:00")}
    text = bronze_changed_after_resample(after, {}, cps)
    assert "bronze changed after the last resample" in text and "2025-01-15" in text and "3-session" in text
    rebased = {"AAA": Basis(day, "2025-01-16T08:00:00+00:00", "r3", 10)}
    assert "1 symbol(s) rebased on a split (AAA)" in bronze_changed_after_resample(before, rebased, cps)
    assert bronze_changed_after_resample(after, {}, []) == ""  # no silver yet: silver's own note says so


def test_monitoring_overview_warns_when_bronze_changed_after_the_last_resample(tmp_path):
    settings = settings_for(tmp_path)
    store = LocalStore(settings.lake_uri)
    fill_lake(store)  # two checkpoints of the last processed session Jan 15
    record_sessions(store, {AS_OF: SessionEntry(ALL, 50, 50, "grouped", "r3", "2025-01-15T21:30:00+00:00")})
    p = MonitoringParams(read_postgres=False)

    def resampled_at(stamp: str) -> None:
        for n in (3, 5):
            doc = json.loads(store.get(checkpoint_key(n))) | {"updated_at": stamp}
            store.put(checkpoint_key(n), json.dumps(doc).encode())

    resampled_at("2025-01-15T22:00:00+00:00")  # after the fetch: silver holds it
    row = collect(settings, p).overview().loc["silver"]
    assert row["state"] == "ok" and "changed after" not in row["detail"]
    resampled_at("2025-01-15T21:00:00+00:00")  # the session was (re-)fetched after the last resample
    row = collect(settings, p).overview().loc["silver"]
    assert row["state"] == "look" and "bronze changed after the last resample" in row["detail"]
    assert "1 session(s) written (2025-01-15)" in row["detail"] and "run 02_resample" in row["detail"]
