"""03_migrate: a generated DMS export (with its quirks) into bronze, validated, resumable, guarded cleanup."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from condvest.bars import BRONZE_SCHEMA
from condvest.bronze import merge_rows
from condvest.errors import CorruptObject, ParameterError, ValidationError
from condvest.lake import BRONZE_PREFIX, DMS_PREFIX, bronze_history_key
from condvest.manifest import read_sessions
from condvest.migrate import MigrateParams, cleanup_sources, run_migration
from condvest.migrate.read import dedupe
from condvest.migrate.state import REPORT_KEY, STATE_KEY
from condvest.offline.dms import write_dms_export
from condvest.offline.market import SyntheticMarket
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT

START, END = dt.date(2019, 1, 2), dt.date(2020, 6, 30)
N_SYMBOLS = 24


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(N_SYMBOLS, seed=11, full_history_share=0.5)


@pytest.fixture(scope="module")
def export_bytes(market, tmp_path_factory) -> dict[str, bytes]:
    """The export's objects, generated once per module (8 files, every quirk)."""
    store = LocalStore(tmp_path_factory.mktemp("export"))
    keys = write_dms_export(store, market, START, END, n_files=8, quirks=True)
    return {k: store.get(k) for k in keys}


@pytest.fixture
def lake(tmp_path, export_bytes) -> tuple[Settings, LocalStore]:
    store = LocalStore(tmp_path / "lake")
    for k, data in export_bytes.items():
        store.put(k, data)
    return Settings(lake_uri=str(store.root)), store


def _objects(store: LocalStore, prefix: str) -> dict[str, str]:
    return {o.key: o.etag for o in store.list(prefix)}


def _bronze(store: LocalStore) -> pd.DataFrame:
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas() for o in store.list(BRONZE_PREFIX + "/")]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=BRONZE_SCHEMA.names)
    return df.sort_values(["symbol", "date"]).reset_index(drop=True)


def _migrate(settings: Settings, **kw) -> object:
    p = MigrateParams(**{k: kw.pop(k) for k in list(kw) if k in MigrateParams.__dataclass_fields__})
    report = run_migration(settings, p, progress=False, **kw)
    report.raise_for_status()
    return report


def test_quirky_export_migrates_with_identical_counts_and_values(lake, market) -> None:
    settings, store = lake
    sources = _objects(store, DMS_PREFIX + "/")
    report = _migrate(settings)
    assert report.status == "migrated" and report.passed is True
    assert report.duplicates > 0  # the generator repeats about fifty (symbol, session) rows across files
    truth = market.frame(START, END)
    assert report.source_rows == len(truth) + report.duplicates
    bronze = _bronze(store)
    # one data.parquet per symbol, nothing else
    assert {o.key for o in store.list(BRONZE_PREFIX + "/")} == {bronze_history_key(s) for s in truth["symbol"].unique()}
    assert pq.read_schema(io.BytesIO(store.get(bronze_history_key(truth["symbol"].iloc[0])))).equals(
        BRONZE_SCHEMA, check_metadata=False
    )
    # identical per-symbol counts and values (the market is the ground truth behind the export)
    assert bronze.groupby("symbol").size().to_dict() == truth.groupby("symbol").size().to_dict()
    cols = ["symbol", "date", "open", "high", "low", "close", "volume"]
    got = bronze[cols].assign(date=pd.to_datetime(bronze["date"]).dt.date)
    want = truth[cols].assign(date=pd.to_datetime(truth["date"]).dt.date).sort_values(["symbol", "date"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
    # bar time = 00:00 New York of the session, kept as a UTC instant; ingested_at = the DMS load time
    ts = pd.to_datetime(bronze["timestamp"]).dt.tz_convert("America/New_York")
    assert (ts.dt.hour == 0).all() and (ts.dt.date == got["date"]).all()
    assert bronze["ingested_at"].notna().all() and (bronze["interval"] == "1d").all()
    # validation table: every symbol passes, counts match
    v = report.validation
    assert len(v) == truth["symbol"].nunique() and v["ok"].all()
    assert (v["source_rows"] == v["target_rows"]).all() and v["duplicates"].sum() == report.duplicates
    assert report.failures().empty
    # manifest: every session, scope all, source dms
    sessions = read_sessions(store, START, END)
    assert set(sessions) == set(got["date"]) and all(e.scope == "all" and e.source == "dms" for e in sessions.values())
    # the report names the files with sizes and etags; the sources are untouched
    doc = json.loads(store.get(REPORT_KEY))
    assert doc["passed"] and {s["key"]: s["etag"] for s in doc["sources"]} == sources
    assert all(s["size"] > 0 for s in doc["sources"])
    assert _objects(store, DMS_PREFIX + "/") == sources
    assert set(report.cleanup["action"]) == {"kept"}
    assert report.to_frame().set_index("item").loc["validation", "value"] == "passed"


def test_rerun_after_completion_writes_nothing(lake) -> None:
    settings, store = lake
    _migrate(settings)
    before = _objects(store, "")
    again = _migrate(settings)
    assert again.status == "already_migrated" and again.files_written == 0 and "nothing written" in again.message
    assert _objects(store, "") == before
    assert again.passed is True and len(again.validation) == again.symbols and again.validation["ok"].all()


def _run_killed(settings: Settings, point: str, tmpdir: str | None = None, **kw) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        from condvest.migrate import MigrateParams, run_migration
        from condvest.settings import Settings
        kw = {kw!r}
        p = MigrateParams(**{{k: kw.pop(k) for k in list(kw) if k in MigrateParams.__dataclass_fields__}})
        run_migration(Settings(lake_uri={settings.lake_uri!r}), p, progress=False, **kw)
    """)
    env = {**os.environ, "CONDVEST_CRASH_AT": point, **({"TMPDIR": tmpdir} if tmpdir else {})}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, timeout=120)


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_killed_run_resumes_and_matches_a_clean_run(lake, tmp_path, export_bytes) -> None:
    settings, store = lake
    sources = _objects(store, DMS_PREFIX + "/")
    proc = _run_killed(settings, "migrate.write_batch.2", batch_symbols=5)
    assert proc.returncode == 77, proc.stderr.decode()[-2000:]
    state = json.loads(store.get(STATE_KEY))
    assert state["phase"] == "writing" and state["files_written"] == 5  # batch 1 saved, batch 2 written, unsaved
    assert not store.exists(REPORT_KEY)
    resumed = _migrate(settings, batch_symbols=5)
    assert resumed.status == "migrated" and resumed.resumed and resumed.passed
    assert resumed.files_written == resumed.symbols - 5  # batch 1 was not written again
    assert _objects(store, DMS_PREFIX + "/") == sources
    clean = LocalStore(tmp_path / "clean")
    for k, data in export_bytes.items():
        clean.put(k, data)
    _migrate(Settings(lake_uri=str(clean.root)))
    pd.testing.assert_frame_equal(_bronze(store), _bronze(clean))


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
@pytest.mark.parametrize("point", ["migrate.after_write", "migrate.after_validate"])
def test_killed_after_writing_resumes_without_rewriting(lake, point) -> None:
    settings, store = lake
    proc = _run_killed(settings, point)
    assert proc.returncode == 77, proc.stderr.decode()[-2000:]
    etags = _objects(store, BRONZE_PREFIX + "/")
    resumed = _migrate(settings)
    assert resumed.resumed and resumed.passed and resumed.files_written == 0
    assert _objects(store, BRONZE_PREFIX + "/") == etags


def test_delete_refused_without_a_passing_report_then_allowed(lake) -> None:
    settings, store = lake
    sources = _objects(store, DMS_PREFIX + "/")
    with pytest.raises(ValidationError, match="no validation report"):
        cleanup_sources(settings, MigrateParams(delete_source=True), store=store)
    assert _objects(store, DMS_PREFIX + "/") == sources
    _migrate(settings)
    # a source file changed after the validation: refused, nothing touched
    changed = sorted(sources)[3]
    store.put(changed, store.get(changed))  # same bytes, new object (new etag)
    dry = cleanup_sources(settings, MigrateParams(delete_source=True, dry_run=True), store=store)
    assert set(dry["action"]) == {"would refuse"} and dry["detail"].str.contains(changed).all()
    with pytest.raises(ValidationError, match="changed since the validation"):
        cleanup_sources(settings, MigrateParams(delete_source=True), store=store)
    assert set(_objects(store, DMS_PREFIX + "/")) == set(sources)
    # a fresh run validates the export as it is now, and then the delete goes through
    report = _migrate(settings, delete_source=True)
    assert report.status == "migrated" and report.passed
    assert set(report.cleanup["action"]) == {"deleted"} and len(report.cleanup) == len(sources)
    assert not list(store.list(DMS_PREFIX + "/"))
    doc = json.loads(store.get(REPORT_KEY))
    assert doc["cleanup"]["action"] == "delete" and doc["cleanup"]["finished_at"]
    after = _migrate(settings)
    assert after.status == "nothing_to_migrate" and "deleted" in after.message


def test_failed_validation_keeps_the_report_and_refuses_cleanup(lake) -> None:
    settings, store = lake
    assert _run_killed(settings, "migrate.after_manifest").returncode == 77
    # damage one history behind the migration's back: drop its last row
    key = sorted(o.key for o in store.list(BRONZE_PREFIX + "/"))[0]
    t = pq.read_table(io.BytesIO(store.get(key)))
    buf = io.BytesIO()
    pq.write_table(t.slice(0, t.num_rows - 1), buf)
    store.put(key, buf.getvalue())
    with pytest.raises(ValidationError, match="validation failed for 1 symbol"):
        _migrate(settings, delete_source=True)
    doc = json.loads(store.get(REPORT_KEY))
    assert doc["passed"] is False and doc["totals"]["failed_symbols"] == 1
    bad = [r for r in doc["symbols"] if not r["ok"]][0]
    assert bad["missing"] == 1 and bronze_history_key(bad["symbol"]) == key
    with pytest.raises(ValidationError, match="did not pass"):
        cleanup_sources(settings, MigrateParams(delete_source=True), store=store)
    assert len(list(store.list(DMS_PREFIX + "/"))) == 8
    # a re-run starts over (writes are merges) and repairs it
    assert _migrate(settings).passed


def test_backup_moves_the_export(lake, export_bytes) -> None:
    settings, store = lake
    report = _migrate(settings, backup_source=True)
    assert set(report.cleanup["action"]) == {"moved"}
    assert not list(store.list(DMS_PREFIX + "/"))
    for k, data in export_bytes.items():
        assert store.get(k.replace("public/raw_ohlcv/", "public/raw_ohlcv_backup/")) == data
    assert _migrate(settings).status == "nothing_to_migrate"


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_killed_cleanup_finishes_on_rerun(lake) -> None:
    settings, store = lake
    proc = _run_killed(settings, "migrate.cleanup", delete_source=True)
    assert proc.returncode == 77, proc.stderr.decode()[-2000:]
    assert len(list(store.list(DMS_PREFIX + "/"))) == 7
    again = _migrate(settings, delete_source=True)  # the report still covers what is left: no re-migration
    assert again.status == "already_migrated" and again.files_written == 0
    assert len(again.cleanup) == 7 and set(again.cleanup["action"]) == {"deleted"}
    assert not list(store.list(DMS_PREFIX + "/"))


def test_corrupt_or_illtyped_file_is_named_and_nothing_is_written(lake) -> None:
    settings, store = lake
    bad = f"{DMS_PREFIX}/LOAD00000003.parquet"
    data = store.get(bad)
    store.put(bad, data[: len(data) // 2])  # truncated
    sources = _objects(store, DMS_PREFIX + "/")
    with pytest.raises(CorruptObject) as exc:
        _migrate(settings)
    assert exc.value.key == bad
    assert _objects(store, "") == sources  # no bronze, no state, no report, no manifest
    # a file whose columns do not fit: named too
    t = pq.read_table(io.BytesIO(data)).drop_columns(["timestamp_1"])
    buf = io.BytesIO()
    pq.write_table(t, buf)
    store.put(bad, buf.getvalue())
    with pytest.raises(CorruptObject, match="timestamp_1") as exc:
        _migrate(settings)
    assert exc.value.key == bad


def test_dry_run_writes_nothing(lake) -> None:
    settings, store = lake
    before = _objects(store, "")
    report = _migrate(settings, dry_run=True, delete_source=True)
    assert report.status == "dry_run" and report.symbols > 0 and report.files_written == 0
    assert set(report.cleanup["action"]) == {"would refuse"}  # nothing validated yet
    assert _objects(store, "") == before


def test_existing_history_is_merged_newer_rows_win(lake, market) -> None:
    settings, store = lake
    sym = market.frame(START, END)["symbol"].iloc[0]
    truth = market.frame(START, END, [sym])
    fresh = truth.tail(2).copy()  # a later fetch corrected the last bar and added one the export lacks
    fresh["close"] = fresh["close"] + 1.0
    fresh["date"] = [truth["date"].iloc[-1], END + dt.timedelta(days=1)]
    fresh = fresh.assign(
        timestamp=pd.Timestamp("2026-01-01", tz="UTC"),
        vwap=np.nan,
        transactions=pd.NA,
        interval="1d",
        ingested_at=pd.Timestamp("2026-01-05", tz="UTC"),
    )
    table = pa.Table.from_pandas(fresh[BRONZE_SCHEMA.names], schema=BRONZE_SCHEMA, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.put(bronze_history_key(sym), buf.getvalue())
    report = _migrate(settings)
    assert report.passed and report.merged_symbols == 1
    row = report.validation.set_index("symbol").loc[sym]
    assert row["superseded"] == 1 and row["other_rows"] == 1 and row["target_rows"] == len(truth) + 1
    got = _bronze(store)
    got = got[got["symbol"] == sym]
    assert len(got) == len(truth) + 1
    assert got["close"].iloc[-2] == fresh["close"].iloc[0]  # the fresher fetch kept its value
    assert got["close"].iloc[:-2].tolist() == truth["close"].iloc[:-1].tolist()


def test_dedupe_newest_load_time_wins_ties_to_the_later_row() -> None:
    t = pa.table(
        {
            "symbol": ["B", "A", "A", "A", "B"],
            "date": pa.array([1, 1, 1, 2, 1], pa.date32()),
            "ingested_at": pa.array([5, 9, 3, None, 5], pa.timestamp("us", tz="UTC")),
        }
    )
    d = dedupe(t)
    assert d["symbols"] == ["A", "B"] and d["order"].tolist() == [1, 3, 4]
    assert d["raw_counts"].tolist() == [3, 2] and d["starts"].tolist() == [0, 2] and d["ends"].tolist() == [2, 3]


def test_nothing_to_migrate_and_bad_parameters(tmp_path) -> None:
    settings = Settings(lake_uri=str(tmp_path / "empty"))
    report = _migrate(settings)
    assert report.status == "nothing_to_migrate" and report.validation.empty and report.cleanup.empty
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*"))
    for prefix in ("bronze/raw_ohlcv", "../etc", "processing_metadata", "a//b", ""):
        with pytest.raises(ParameterError):
            _migrate(settings, source_prefix=prefix)
    with pytest.raises(ParameterError):
        _migrate(settings, delete_source=True, backup_source=True)
    with pytest.raises(ParameterError):
        _migrate(settings, dry_run="yes")


def test_migration_on_s3(s3_settings, market) -> None:
    from condvest.storage import open_store

    store = open_store(settings=s3_settings)
    write_dms_export(store, market, dt.date(2020, 1, 2), dt.date(2020, 3, 31), symbols=market.symbols[:6], n_files=3)
    report = run_migration(s3_settings, MigrateParams(backup_source=True), progress=False)
    assert report.passed and report.symbols == 6 and report.duplicates >= 0
    assert len(list(store.list("public/raw_ohlcv_backup/"))) == 3 and not list(store.list(DMS_PREFIX + "/"))
    assert run_migration(s3_settings, progress=False).status == "nothing_to_migrate"


def test_migration_on_s3_validates_every_history_it_wrote_and_merged(s3_settings, lake, market) -> None:
    """The validation reads the histories back from S3 many at a time (``storage.local_files``): every symbol of
    the quirky export checks out, the merged one through the row-level join, and bronze equals a local run's."""
    from condvest.storage import open_store

    settings, local = lake
    s3 = open_store(settings=s3_settings)
    for k in local.list(DMS_PREFIX + "/"):
        s3.put(k.key, local.get(k.key))
    sym = market.symbols[5]
    fresh = pa.Table.from_pandas(
        market.frame(START, END, [sym])
        .tail(1)
        .assign(
            close=lambda d: d["close"] + 1.0,
            timestamp=pd.Timestamp("2026-01-01", tz="UTC"),
            vwap=np.nan,
            transactions=pd.NA,
            interval="1d",
            ingested_at=pd.Timestamp("2026-01-05", tz="UTC"),
        )[BRONZE_SCHEMA.names],
        schema=BRONZE_SCHEMA,
        preserve_index=False,
    )
    buf = io.BytesIO()
    pq.write_table(fresh, buf)
    for store in (s3, local):
        store.put(bronze_history_key(sym), buf.getvalue())
    got = _migrate(s3_settings)
    want = _migrate(settings)
    assert got.passed and got.symbols == want.symbols > 10 and got.merged_symbols == 1
    assert got.validation.set_index("symbol").loc[sym, "superseded"] == 1
    pd.testing.assert_frame_equal(got.validation, want.validation)
    pd.testing.assert_frame_equal(_bronze(s3), _bronze(local))


def _tiny_dms(**overrides) -> bytes:
    cols = {
        "symbol": pa.array(["AAA", "AAA"]),
        "open": pa.array([1.0, 2.0]),
        "high": pa.array([1.5, 2.5]),
        "low": pa.array([0.5, 1.5]),
        "close": pa.array([1.2, 2.2]),
        "volume": pa.array([100, 200], pa.int64()),
        "interval": pa.array(["1d", "1d"]),
        "timestamp": pa.array([1_760_000_000_000_000] * 2, pa.timestamp("us")),
        "timestamp_1": pa.array([1_704_171_600_000, 1_704_258_000_000], pa.timestamp("ms", tz="UTC")),
    }
    cols.update(overrides)
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"volume": pa.array([2**53 + 1, 5], pa.int64())}, "volume"),  # would round as a double
        ({"timestamp_1": pa.array(["2024-01-02T05:00:00Z", "yesterday"])}, "timestamp_1"),
        ({"symbol": pa.array(["AAA", "../x"])}, "invalid symbol"),
        ({"close": pa.array([1.2, None], pa.float64())}, "null"),
    ],
)
def test_values_that_cannot_be_kept_exactly_stop_the_run_naming_the_file(tmp_path, override, match) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put(f"{DMS_PREFIX}/LOAD00000001.parquet", _tiny_dms())
    bad = f"{DMS_PREFIX}/LOAD00000002.parquet"
    store.put(bad, _tiny_dms(**override))
    with pytest.raises(CorruptObject, match=match) as exc:
        _migrate(Settings(lake_uri=str(store.root)))
    assert exc.value.key == bad and not list(store.list(BRONZE_PREFIX + "/"))


def test_tiny_export_sessions_are_new_york_dates(tmp_path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put(f"{DMS_PREFIX}/LOAD00000001.parquet", _tiny_dms())  # 00:00 New York = 05:00 UTC
    report = _migrate(Settings(lake_uri=str(store.root)))
    assert report.passed and report.first_session == dt.date(2024, 1, 2) and report.last_session == dt.date(2024, 1, 3)
    got = _bronze(store)
    assert got["volume"].tolist() == [100.0, 200.0] and got["vwap"].isna().all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 4), st.one_of(st.none(), st.integers(0, 3))),
        min_size=1,
        max_size=30,
    )
)
def test_dedupe_matches_a_reference_and_merge_is_idempotent(rows) -> None:
    t = pa.table(
        {
            "symbol": [r[0] for r in rows],
            "date": pa.array([r[1] for r in rows], pa.date32()),
            "ingested_at": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
            "pos": list(range(len(rows))),
        }
    )
    d = dedupe(t)
    ref = (
        pd.DataFrame(
            {"s": [r[0] for r in rows], "d": [r[1] for r in rows], "i": [-1 if r[2] is None else r[2] for r in rows]}
        )
        .reset_index()
        .sort_values(["s", "d", "i", "index"])
        .groupby(["s", "d"])
        .tail(1)
    )
    assert d["order"].tolist() == ref["index"].tolist()
    # merging a symbol's winners into a history that already holds them changes nothing
    sym = d["symbols"][0]
    win = t.take(pa.array(d["order"][d["starts"][0] : d["ends"][0]]))
    full = pa.table({c: win.column(c) for c in ("symbol", "date", "ingested_at")})
    assert merge_rows([(full, "history"), (full, "dms")]).equals(full) and sym == d["symbols"][0]
    # and a newer migrated row replaces an older bronze row, never the other way round
    older = full.set_column(2, "ingested_at", pa.array([0] * len(full), pa.timestamp("us", tz="UTC")))
    newer = full.set_column(2, "ingested_at", pa.array([9] * len(full), pa.timestamp("us", tz="UTC")))
    assert merge_rows([(older, "history"), (newer, "dms")]).equals(newer) and merge_rows(
        [(newer, "history"), (older, "dms")]
    ).equals(newer)


def test_two_runs_that_interleave_stop_with_busy(tmp_path) -> None:
    from condvest.errors import BusyError
    from condvest.migrate.state import MigrationState, load_state

    store = LocalStore(tmp_path / "lake")
    mine = MigrationState(run_id="a", source_prefix=DMS_PREFIX, sources=[])
    mine.save(store)
    theirs, _ = load_state(store)
    theirs.save(store)  # another run took the state over
    with pytest.raises(BusyError, match="another migration run"):
        mine.save(store)
    with pytest.raises(BusyError):
        MigrationState(run_id="b", source_prefix=DMS_PREFIX, sources=[]).save(store)  # a fresh run, state exists


def test_a_history_of_the_previous_fetcher_is_merged_as_it_is(lake, market) -> None:
    """Its data.parquet has no date column, a naive UTC timestamp in nanoseconds and an integer volume."""
    settings, store = lake
    sym = market.frame(START, END)["symbol"].iloc[0]
    truth = market.frame(START, END, [sym])
    later = [dt.date(2020, 7, 1), dt.date(2020, 7, 2)]  # sessions after the export
    stamps = pd.DatetimeIndex(pd.to_datetime(later)).tz_localize("America/New_York").tz_convert("UTC")
    old = pa.table(
        {
            "symbol": [sym, sym],
            **{c: [10.0, 11.0] for c in ("open", "high", "low", "close")},
            "volume": pa.array([100, 200], pa.int64()),
            "timestamp": pa.array(stamps.tz_localize(None), pa.timestamp("ns")),
            "interval": ["1d", "1d"],
        }
    )
    buf = io.BytesIO()
    pq.write_table(old, buf)
    store.put(bronze_history_key(sym), buf.getvalue())
    report = _migrate(settings)
    assert report.passed and report.merged_symbols == 1
    row = report.validation.set_index("symbol").loc[sym]
    assert row["other_rows"] == 2 and row["target_rows"] == len(truth) + 2
    got = _bronze(store)
    got = got[got["symbol"] == sym]
    assert list(pd.to_datetime(got["date"]).dt.date.tail(2)) == later and list(got["volume"].tail(2)) == [100.0, 200.0]


# ---------------------------------------------------------------- memory bounded: the export in symbol groups

TIE_DAY = dt.date(2020, 7, 1)  # a session after the generated export: only the two files below hold it


def _tie_file(symbols: list[str], close: float, repeat_last: bool = False) -> bytes:
    """An export file without DMS's load time (null ``ingested_at``, so its rows tie with each other) holding
    ``TIE_DAY`` for ``symbols``; ``repeat_last``: the last symbol's row twice, the second one with close + 1."""
    rows = [(s, close) for s in symbols] + ([(symbols[-1], close + 1)] if repeat_last else [])
    n = len(rows)
    stamp = pd.Timestamp(TIE_DAY).tz_localize("America/New_York").tz_convert("UTC")
    buf = io.BytesIO()
    pq.write_table(
        pa.table(
            {
                "symbol": [s for s, _ in rows],
                "open": [c for _, c in rows],
                "high": [c for _, c in rows],
                "low": [c for _, c in rows],
                "close": [c for _, c in rows],
                "volume": pa.array([100] * n, pa.int64()),
                "interval": ["1d"] * n,
                "timestamp_1": pa.array([stamp.value // 1000] * n, pa.timestamp("us", tz="UTC")),
            }
        ),
        buf,
    )
    return buf.getvalue()


def _lake_with_ties(root, export_bytes, market) -> tuple[Settings, LocalStore]:
    store = LocalStore(root)
    for k, data in export_bytes.items():
        store.put(k, data)
    syms = sorted(market.symbols)
    spread = [syms[0], syms[len(syms) // 2], syms[-1]]  # the first, a middle and the last group
    store.put(f"{DMS_PREFIX}/LOAD90000001.parquet", _tie_file(spread, 50.0))
    store.put(f"{DMS_PREFIX}/LOAD90000002.parquet", _tie_file(spread, 60.0, repeat_last=True))
    return Settings(lake_uri=str(root)), store


def _manifest(store: LocalStore) -> dict:
    return {d: (e.scope, e.symbols, e.rows, e.source) for d, e in read_sessions(store, START, TIE_DAY).items()}


def _report_body(store: LocalStore) -> dict:
    doc = json.loads(store.get(REPORT_KEY))
    doc["sources"] = [(s["key"], s["size"]) for s in doc["sources"]]  # etags differ between two lakes
    return {k: v for k, v in doc.items() if k not in ("run_id", "started_at", "validated_at")}


def _spills(tmp: os.PathLike) -> list[str]:
    return [p for p in os.listdir(tmp) if p.startswith("condvest-migrate-")]


@pytest.fixture
def private_tmp(tmp_path):
    """The stdlib's temporary folder pointed at a folder of this test, to see what a migration leaves there."""
    import tempfile

    folder = tmp_path / "tmpdir"
    folder.mkdir()
    before, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = before


def test_a_migration_in_many_symbol_groups_equals_one_pass(tmp_path, export_bytes, market, private_tmp, caplog):
    """A tiny memory budget splits the export into groups (spilled to a temporary folder, removed after):
    byte-identical histories, the same manifest, report and validation; ties still go to the later file."""
    one_settings, one = _lake_with_ties(tmp_path / "one", export_bytes, market)
    many_settings, many = _lake_with_ties(tmp_path / "many", export_bytes, market)
    single = _migrate(one_settings)
    with caplog.at_level("INFO", logger="condvest.migrate"):
        grouped = _migrate(many_settings, memory_limit="200KB")  # 625 source rows per group
    staged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("migration staged")]
    groups = int(staged[0].split("groups=")[1].split()[0])
    assert groups > 5 and int(staged[0].split("spilled_bytes=")[1]) > 0
    assert not _spills(private_tmp)  # the spill folder is gone
    assert grouped.passed and single.passed and grouped.duplicates == single.duplicates > 0
    for k in ("source_rows", "symbols", "sessions", "first_session", "last_session", "files_written", "rows_written"):
        assert getattr(grouped, k) == getattr(single, k), k
    assert grouped.last_session == TIE_DAY
    keys = {o.key for o in one.list(BRONZE_PREFIX + "/")}
    assert keys == {o.key for o in many.list(BRONZE_PREFIX + "/")} and len(keys) == single.symbols
    assert all(one.get(k) == many.get(k) for k in keys)
    assert _manifest(one) == _manifest(many)
    assert _report_body(one) == _report_body(many)
    pd.testing.assert_frame_equal(single.validation, grouped.validation)
    # the tie on TIE_DAY: the later file wins, and within it the later row
    got = _bronze(many)
    tie = got[pd.to_datetime(got["date"]).dt.date == TIE_DAY].set_index("symbol")["close"]
    syms = sorted(market.symbols)
    assert tie.to_dict() == {syms[0]: 60.0, syms[len(syms) // 2]: 60.0, syms[-1]: 61.0}


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_a_run_killed_between_symbol_groups_resumes_with_any_budget(tmp_path, export_bytes, market, private_tmp):
    """Killed after two groups were saved (the third written, unsaved), resumed with the default budget
    (one group): the same histories as a clean run, the saved groups not written again."""
    settings, store = _lake_with_ties(tmp_path / "lake", export_bytes, market)
    proc = _run_killed(settings, "migrate.write_batch.3", str(private_tmp), memory_limit="200KB")  # a group: a batch
    assert proc.returncode == 77, proc.stderr.decode()[-2000:]
    assert len(_spills(private_tmp)) == 1  # a killed process removes nothing: the next run does
    state = json.loads(store.get(STATE_KEY))
    saved = state["files_written"]
    assert not store.exists(REPORT_KEY)
    resumed = _migrate(settings)
    assert state["phase"] == "writing" and 2 <= saved < resumed.symbols - 2
    assert resumed.resumed and resumed.passed and resumed.files_written == resumed.symbols - saved
    clean_settings, clean = _lake_with_ties(tmp_path / "clean", export_bytes, market)
    _migrate(clean_settings)
    keys = {o.key for o in clean.list(BRONZE_PREFIX + "/")}
    assert all(store.get(k) == clean.get(k) for k in keys)
    assert _report_body(store) == _report_body(clean)
    # and the other way round: killed in one pass, resumed in groups
    again = _lake_with_ties(tmp_path / "again", export_bytes, market)
    assert _run_killed(again[0], "migrate.write_batch.2", batch_symbols=5).returncode == 77
    assert not _spills(private_tmp)
    assert _migrate(again[0], memory_limit="200KB").files_written == resumed.symbols - 5
    assert all(again[1].get(k) == clean.get(k) for k in keys)


def test_a_bad_file_in_a_spilled_export_stops_the_run_and_leaves_no_spill(lake, private_tmp) -> None:
    settings, store = lake
    bad = sorted(o.key for o in store.list(DMS_PREFIX + "/"))[-1]  # read last: the rows before it are spilled
    store.put(bad, store.get(bad)[:1000])
    before = _objects(store, "")
    with pytest.raises(CorruptObject) as exc:
        _migrate(settings, memory_limit="200KB")
    assert exc.value.key == bad and _objects(store, "") == before and not _spills(private_tmp)
    with pytest.raises(ParameterError, match="memory_limit"):
        _migrate(settings, memory_limit="lots")


def _big_dms(symbols: list[str], days: int, load_us: int | None, close: float) -> bytes:
    """A DMS file of every symbol on ``days`` sessions from 2000-01-03 (rows interleaved by day)."""
    from condvest.calendar import sessions_between

    sessions = sessions_between(dt.date(2000, 1, 3), dt.date(2040, 1, 1))[:days]
    stamps = pd.DatetimeIndex(pd.to_datetime(sessions)).tz_localize("America/New_York").tz_convert("UTC")
    n = len(symbols) * days
    sym = np.tile(np.array(symbols, dtype=object), days)
    ts = np.repeat(stamps.asi8 // 1000, len(symbols))
    price = close + np.arange(n) % 997 / 100
    cols = {
        "symbol": pa.array(sym, pa.string()),
        **{c: pa.array(price) for c in ("open", "high", "low", "close")},
        "volume": pa.array(np.arange(n), pa.int64()),
        "interval": pa.array(["1d"] * n),
        "timestamp_1": pa.array(ts, pa.timestamp("us", tz="UTC")),
    }
    if load_us is not None:
        cols["timestamp"] = pa.array(np.full(n, load_us), pa.timestamp("us"))
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


def test_staged_groups_cut_large_spilled_files_exactly(tmp_path, private_tmp) -> None:
    """Files of several spill batches each, cut into groups: every group holds exactly its symbols' rows,
    in file order, and the winners over all groups are those of one deduplication of the whole export."""
    from condvest.migrate.read import MIN_PARQUET_ROW_BYTES, read_source, stage_export

    store = LocalStore(tmp_path / "lake")
    symbols = [f"S{i:03d}" for i in range(60)]
    store.put(f"{DMS_PREFIX}/A.parquet", _big_dms(symbols, 2500, None, 10.0))  # 150,000 rows, no load time
    store.put(f"{DMS_PREFIX}/B.parquet", _big_dms(symbols[::3], 1800, None, 20.0))  # ties with A: B wins
    store.put(f"{DMS_PREFIX}/C.parquet", _big_dms(symbols[5:40], 900, 1_700_000_000_000_000, 30.0))  # newest
    sources = list(store.list(DMS_PREFIX + "/"))
    whole = pa.concat_tables([read_source(store, o.key) for o in sources])
    ref = dedupe(whole)
    want = whole.take(pa.array(ref["order"]))
    size = sum(o.size for o in sources)
    # spilled from the first file (the export's bytes say it is more than a group) or once a group's rows are held
    for group_rows in (70_000, size // MIN_PARQUET_ROW_BYTES + 1):
        with stage_export(store, sources, group_rows=group_rows, progress=False) as export:
            assert len(export.groups) > 1 and export.spill_dir is not None and export.rows == whole.num_rows
            assert export.spilled_bytes > 0 and len(_spills(private_tmp)) == 1
            got = []
            for g in range(len(export.groups)):
                src = export.group(g)
                mine = whole.filter(pc.is_in(whole["symbol"], value_set=pa.array(src.symbols)))
                assert src.table.sort_by("symbol").equals(mine.sort_by("symbol"))  # its symbols, all their rows
                assert src.raw_counts.sum() == mine.num_rows
                got += [src.symbol_rows(i) for i in range(len(src.symbols))]
            assert pa.concat_tables(got).equals(want)
        assert not _spills(private_tmp)
