"""05_monitoring on real parts: a local lake (manifest, quarantine, silver, checkpoints), the runner's own run
index, a real PostgreSQL with the retention policy deployed, and papermill running the notebook."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from condvest import retention
from condvest.bars import bars_frame, check_bars
from condvest.bronze import write_quarantine
from condvest.calendar import ny_close_epoch_ms, sessions_between
from condvest.errors import ParameterError
from condvest.lake import checkpoint_key, silver_key
from condvest.manifest import ALL, SessionEntry, record_sessions
from condvest.monitoring import snapshot as monitoring
from condvest.postgres import EmbeddedCluster, connect
from condvest.runs import append_run
from condvest.settings import Secret, Settings
from condvest.splits import Basis, record_basis, record_splits, splits_frame
from condvest.storage import LocalStore
from runner.execute import CellError, RunResult
from tests.fixtures.paths import ROOT

AS_OF = dt.date(2025, 1, 15)  # a session; 2025-01-09 was a closure (national day of mourning)
GAPS = {dt.date(2024, 12, 10), dt.date(2025, 1, 13)}
PARTIAL = dt.date(2025, 1, 14)


def settings_for(tmp_path: Path, **kw) -> Settings:
    return Settings(
        lake_uri=str(tmp_path / "lake"), runs_uri=str(tmp_path / "runs"), home=tmp_path / ".condvest", as_of=AS_OF, **kw
    )


def fill_lake(store: LocalStore) -> None:
    """Dec 2 2024 .. Jan 16 2025 in the manifest, minus two gaps; Jan 14 for two symbols only; Jan 16 lies
    after as_of (must be ignored). Quarantine on two days, silver files and two checkpoints."""
    entries = {
        d: SessionEntry(ALL, 50, 50, "grouped", "r1")
        for d in sessions_between(dt.date(2024, 12, 2), dt.date(2025, 1, 16))
    }
    for d in GAPS:
        del entries[d]
    entries[PARTIAL] = SessionEntry(("AAA", "BBB"), 2, 2, "range", "r2")
    record_sessions(store, entries)
    for day, bad in ((dt.date(2025, 1, 10), 2), (dt.date(2025, 1, 15), 1)):
        results = [
            {"T": f"S{i}", "o": 10.0, "h": 11.0, "l": 9.0, "c": 10.5, "v": 100.0, "t": ny_close_epoch_ms(day)}
            for i in range(4)
        ]
        for r in results[:bad]:
            r["l"] = 12.0  # low above open and close
        good, quarantined = check_bars(bars_frame(results))
        assert len(quarantined) == bad
        write_quarantine(store, day, "run-1", quarantined)
    for n, months in ((3, [(2024, 12), (2025, 1)]), (5, [(2025, 1)])):
        for y, m in months:
            store.put(silver_key(n, y, m), b"PAR1")
        doc = {
            "interval": n,
            "status": "complete",
            "state": "s1",
            "last_processed_session": "2025-01-15",
            "bars": 40 // n,
            "complete_bars": 40 // n - 1,
            "partial_bars": 1,
            "symbols": 2,
        }
        store.put(checkpoint_key(n), json.dumps(doc).encode())


def record_runs(runs_uri: str) -> None:
    """Through the runner's own append: 01_fetch ok, failed, ok; 02_resample ok; 04_retention failed."""
    store = LocalStore(runs_uri)
    t0 = dt.datetime(2025, 1, 15, 22, 0, tzinfo=dt.UTC)
    err = CellError(4, 3, "report.raise_for_status()", "FetchFailed", "sessions failed: 2025-01-13\nmore")
    plan = [("01_fetch", None), ("01_fetch", err), ("02_resample", None), ("01_fetch", None), ("04_retention", err)]
    for i, (nb, error) in enumerate(plan):
        start = t0 + dt.timedelta(minutes=10 * i)
        result = RunResult(
            run_id=f"run-{i}",
            notebook=f"{nb}.ipynb",
            status="failed" if error else "ok",
            parameters={},
            started_at=start,
            finished_at=start + dt.timedelta(seconds=5 + i),
            ipynb_key=f"run-{i}/{nb}.ipynb",
            html_key=f"run-{i}/{nb}.html",
            runs_uri=runs_uri,
            error=error,
        )
        append_run(store, result.index_record())


def test_a_lake_with_gaps_shows_the_numbers_a_user_checks(tmp_path):
    settings = settings_for(tmp_path)
    fill_lake(LocalStore(settings.lake_uri))
    record_runs(settings.runs_uri)
    snap = monitoring.collect(
        settings, monitoring.MonitoringParams(recent_sessions=5, chart_sessions=40, runs_shown=3, read_postgres=False)
    )

    assert snap.latest_session == AS_OF
    cov = snap.coverage.set_index("year")
    assert list(cov.index) == [2025, 2024]  # newest first
    assert cov.loc[2024, ["expected", "full", "partial", "missing"]].tolist() == [21, 20, 0, 1]
    assert cov.loc[2025, ["expected", "full", "partial", "missing"]].tolist() == [9, 7, 1, 1]
    assert cov.loc[2025, "rows"] == 7 * 50 + 2
    assert (cov.loc[2024, "first"], cov.loc[2025, "last"]) == (dt.date(2024, 12, 2), AS_OF)  # Jan 16 not counted
    # the last 5 sessions are Jan 8, 10, 13, 14, 15: one missing, one held for two symbols only
    assert snap.missing[["date", "status"]].values.tolist() == [[dt.date(2025, 1, 13), "missing"], [PARTIAL, "partial"]]
    assert len(snap.sessions) == 30 and snap.sessions["date"].iloc[-1] == AS_OF
    assert snap.sessions["date"].iloc[0] == dt.date(2024, 12, 2)  # not before the first session held
    assert set(snap.sessions.loc[snap.sessions["status"] == "missing", "date"]) == GAPS

    q = snap.quarantine
    assert q[["date", "files", "rows", "symbols"]].values.tolist() == [
        [AS_OF, 1, 1, 1],
        [dt.date(2025, 1, 10), 1, 2, 2],
    ]
    assert "low > open" in q["reasons"].iloc[0] and "low > close" in q["reasons"].iloc[0]
    assert snap.silver_files[["interval", "files", "first_month", "last_month"]].values.tolist() == [
        [3, 2, "2024-12", "2025-01"],
        [5, 1, "2025-01", "2025-01"],
    ]
    assert snap.checkpoints["interval"].tolist() == [3, 5]

    per = monitoring.runs_by_notebook(snap.runs).set_index("notebook")
    assert per.loc["01_fetch", ["runs", "ok", "failed", "last_status"]].tolist() == [3, 2, 1, "ok"]
    assert per.loc["04_retention", ["runs", "failed", "last_status"]].tolist() == [1, 1, "failed"]
    assert per.loc["01_fetch", "last_failure"] == "cell 4: FetchFailed: sessions failed: 2025-01-13"
    last = monitoring.recent_runs(snap.runs, snap.runs_shown)
    assert last["run_id"].tolist() == ["run-4", "run-3", "run-2"]  # newest first
    assert last["failure"].iloc[0].startswith("cell 4: FetchFailed")

    s = snap.summary()
    assert (s["missing_recent_sessions"], s["quarantined_rows"], s["runs"], s["failed_runs"]) == (2, 3, 5, 2)
    over = snap.overview()
    assert over["state"].to_dict() == {
        "lake": "look",
        "silver": "ok",
        "retention": "look",
        "splits": "ok",
        "truth": "look",  # Postgres never compared with bronze yet (04_retention mode='sync')
        "runs": "fail",
    }
    shown = monitoring.overview_section(snap).items[0][1].to_html()
    assert "#f8d0d0" in shown and "#fde9c8" in shown and "#d8f0d8" in shown, "ok / look / fail are coloured"
    assert "2 of the last 5 sessions" in over.loc["lake", "detail"]
    assert "last run failed: 04_retention" in over.loc["runs", "detail"]

    # silver behind bronze, and a gap window longer than the lake: counted from the first session held
    lag = {
        "interval": 8,
        "status": "complete",
        "state": "s1",
        "last_processed_session": "2025-01-10",
        "bars": 4,
        "complete_bars": 3,
        "partial_bars": 1,
        "symbols": 2,
    }
    LocalStore(settings.lake_uri).put(checkpoint_key(8), json.dumps(lag).encode())
    later = monitoring.collect(settings, monitoring.MonitoringParams(recent_sessions=40, read_postgres=False))
    assert later.overview().loc["silver", "state"] == "look"
    assert later.recent_sessions == 30 and len(later.missing) == 3

    lake = monitoring.lake_section(snap)
    figures = [i for _, i in lake.items if isinstance(i, go.Figure)]
    assert len(figures) == 2 and not lake.note
    for section in (monitoring.silver_section(snap), monitoring.runs_section(snap)):
        assert any(isinstance(i, go.Figure) for _, i in section.items)
    # one slot per NYSE session: no weekend or holiday on the axis
    sessions_chart = figures[0]
    assert sessions_chart.layout.xaxis.type == "category"
    assert list(sessions_chart.layout.xaxis.categoryarray) == [str(d) for d in snap.sessions["date"]]
    # the run table links each run's page
    runs_html = monitoring.runs_section(snap).items[1][1].to_html()
    assert runs_html.count('<a href="file://') == snap.runs_shown == 3


def test_splits_show_each_symbols_basis_and_any_newer_split(tmp_path):
    settings = settings_for(tmp_path)
    store = LocalStore(settings.lake_uri)
    seen = dt.datetime(2025, 1, 10, tzinfo=dt.UTC)
    records = [
        {"ticker": "AAA", "execution_date": "2025-01-08", "split_from": 1, "split_to": 2, "id": "e1"},
        {"ticker": "BBB", "execution_date": "2025-01-10", "split_from": 10, "split_to": 1, "id": "e2"},
        {"ticker": "AAA", "execution_date": "2025-01-14", "split_from": 2, "split_to": 3, "id": "e3"},
    ]
    assert record_splits(store, splits_frame(records, seen)) == 3
    assert record_splits(store, splits_frame(records[:1], seen + dt.timedelta(days=1))) == 0  # seen again
    record_basis(store, {"AAA": Basis(dt.date(2025, 1, 10), "2025-01-10T22:00:00+00:00", "r1", 40)})
    record_basis(store, {"AAA": Basis(dt.date(2025, 1, 9))})  # an older basis never wins
    snap = monitoring.collect(settings, monitoring.MonitoringParams(read_postgres=False))
    table = snap.splits.set_index("symbol")
    assert table.loc["AAA", "basis"] == "2025-01-10" and table.loc["AAA", "newer_splits"] == "2025-01-14 2:3"
    assert table.loc["BBB", "basis"] == "unknown" and table.loc["BBB", "newer_splits"] == "2025-01-10 10:1"
    assert (table["status"] == "behind").all()
    assert snap.overview().loc["splits", "state"] == "look"
    assert snap.summary()["symbols_behind_a_split"] == 2
    record_basis(store, {s: Basis(dt.date(2025, 1, 15)) for s in ("AAA", "BBB")})
    later = monitoring.collect(settings, monitoring.MonitoringParams(read_postgres=False))
    assert (later.splits["status"] == "current").all() and later.overview().loc["splits", "state"] == "ok"
    assert monitoring.splits_section(later).items[0][1]["basis"].tolist() == ["2025-01-15", "2025-01-15"]


def test_on_s3_the_page_shows_what_it_shows_on_a_local_lake(tmp_path, s3_settings):
    """The sources are read at the same time (and silver listed per interval digit): on S3 every table equals the
    local lake's, every interval's silver files counted (3d and 34d share a listing, as 13d and 21d do not)."""
    from condvest.storage import open_store

    settings = settings_for(tmp_path)
    on_s3 = dataclasses.replace(s3_settings, as_of=AS_OF, runs_uri=settings.runs_uri)
    record_runs(settings.runs_uri)
    snaps = []
    for st, store in ((settings, LocalStore(settings.lake_uri)), (on_s3, open_store(settings=on_s3))):
        fill_lake(store)
        for n in (8, 13, 21, 34):
            store.put(silver_key(n, 2025, 1), b"PAR1")
            store.put(checkpoint_key(n), json.dumps({"interval": n, "status": "complete", "state": "s1"}).encode())
        record_basis(store, {"AAA": Basis(dt.date(2025, 1, 10), "2025-01-10T22:00:00+00:00", "r1", 40)})
        snaps.append(monitoring.collect(st, monitoring.MonitoringParams(read_postgres=False)))
    local, s3 = snaps
    assert s3.silver_files["interval"].tolist() == [3, 5, 8, 13, 21, 34]
    assert s3.checkpoints["interval"].tolist() == [3, 5, 8, 13, 21, 34]
    for name in ("coverage", "sessions", "missing", "quarantine", "silver_files", "checkpoints", "splits", "runs"):
        pd.testing.assert_frame_equal(getattr(s3, name), getattr(local, name), obj=name)
    assert s3.summary() == local.summary() and s3.silver_warning == local.silver_warning


def test_an_empty_lake_says_nothing_yet_everywhere(tmp_path):
    settings = settings_for(tmp_path)
    snap = monitoring.collect(settings, monitoring.MonitoringParams(read_postgres=False))
    assert snap.coverage.empty and snap.quarantine.empty and snap.silver_files.empty and snap.runs.empty
    assert len(snap.missing) == 30  # every session of the window is missing: nothing was ever fetched
    assert snap.summary()["failed_runs"] == 0
    over = snap.overview()
    assert (over["state"].drop("splits") == "look").all() and over.loc["splits", "state"] == "ok"  # none seen yet
    assert "01_fetch" in over.loc["lake", "detail"] and "02_resample" in over.loc["silver", "detail"]
    assert "read_postgres=False" in over.loc["retention", "detail"]
    for build in (
        monitoring.lake_section,
        monitoring.silver_section,
        monitoring.retention_section,
        monitoring.runs_section,
        monitoring.splits_section,
    ):
        section = build(snap)
        assert section.note.startswith(("nothing yet", "skipped"))
        assert not any(isinstance(i, go.Figure) for _, i in section.items)
        section._ipython_display_()  # renders outside a kernel too (text)


def test_parameters_are_checked(tmp_path):
    settings = settings_for(tmp_path)
    with pytest.raises(ParameterError, match="recent_sessions"):
        monitoring.collect(settings, monitoring.MonitoringParams(recent_sessions=0, read_postgres=False))
    with pytest.raises(ParameterError, match="as_of"):
        monitoring.collect(settings, monitoring.MonitoringParams(as_of="yesterday", read_postgres=False))


def test_retention_views_before_and_after_deploy_and_archive(pg_settings):
    settings = pg_settings.with_(as_of=AS_OF)
    snap = monitoring.collect(settings)
    assert snap.postgres == "not deployed" and snap.retention is None
    assert "04_retention" in monitoring.retention_section(snap).note

    with connect(settings, autocommit=True) as conn:
        retention.deploy(conn, as_of=AS_OF)
        rows = [
            ("AAA", dt.datetime(2021, 6, 1, 4, tzinfo=dt.UTC)),
            ("BBB", dt.datetime(2021, 6, 2, 4, tzinfo=dt.UTC)),
            ("AAA", dt.datetime(2024, 12, 2, 5, tzinfo=dt.UTC)),
        ]
        for sym, ts in rows:
            conn.execute(
                'INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)'
                " VALUES (%s, %s, 1, 1, 1, 1, 1)",
                (sym, ts),
            )
        assert retention.archive(conn, as_of=AS_OF).archived == 2
    snap = monitoring.collect(settings)
    assert snap.postgres == "ok" and snap.overview().loc["retention", "state"] == "ok"
    dist = snap.retention.distribution
    assert (int(dist["hot_records"].sum()), int(dist["archived_records"].sum())) == (1, 2)
    assert int(snap.retention.statistics.at[0, "total_records"]) == 2
    assert snap.retention.log["status"].tolist() == ["success"]
    section = monitoring.retention_section(snap)
    assert sum(isinstance(i, go.Figure) for _, i in section.items) == 2


def test_an_unreachable_database_is_reported_not_raised(tmp_path):
    settings = settings_for(tmp_path, pg_dsn=Secret("postgresql://nobody@127.0.0.1:1/none"))
    snap = monitoring.collect(settings)
    assert snap.postgres.startswith("unreachable") and "unreachable" in snap.overview().loc["retention", "detail"]


def test_a_stopped_embedded_cluster_is_named_with_the_command_that_starts_it_not_started(tmp_path):
    settings = settings_for(tmp_path)  # no DSN, no RDS: the embedded cluster under tmp_path/.condvest
    snap = monitoring.collect(settings)
    assert "python -m condvest db start" in snap.postgres and "\n" not in snap.postgres
    cluster = EmbeddedCluster(settings.home)
    try:
        assert not cluster.exists(), "a read-only notebook creates and starts no database"
    finally:
        cluster.destroy()


@pytest.mark.slow
def test_the_notebook_runs_headless(tmp_path, monkeypatch):
    from runner import RunOptions, run_notebook

    settings = settings_for(tmp_path)
    fill_lake(LocalStore(settings.lake_uri))
    monkeypatch.setenv("CONDVEST_LAKE_URI", settings.lake_uri)
    monkeypatch.setenv("CONDVEST_RUNS_URI", settings.runs_uri)
    monkeypatch.setenv("CONDVEST_AS_OF", AS_OF.isoformat())
    result = run_notebook(
        "05_monitoring",
        {"read_postgres": False, "recent_sessions": 5},
        settings=settings,
        options=RunOptions(root=ROOT, progress_bar=False),
    )
    assert result.ok, result.summary()
    assert result.results["missing_recent_sessions"] == 2 and result.results["quarantined_rows"] == 3
    nb = json.loads((Path(settings.runs_uri) / result.ipynb_key).read_text())
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert "application/vnd.plotly.v1+json" in outputs and "Sessions not held in full" in outputs


def test_a_halted_symbol_is_named_in_the_gaps_table():
    day = dt.date(2025, 10, 16)
    entries = {day: SessionEntry(("AAA",), 1, 1, "range", "r1", absent=("NEW",), gaps=("HALT",))}
    status = monitoring.session_status(entries, [day, dt.date(2025, 10, 17)])
    table = monitoring.gaps(status)
    assert (
        table.set_index("date").loc[day, "gaps"] == "HALT" and table.set_index("date").loc[day, "status"] == "partial"
    )
