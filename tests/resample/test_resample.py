"""02_resample: semantics against an independent pandas computation, incremental runs, DMS input, lock."""

from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condvest.calendar import ny_midnight_epoch_ms, sessions_between
from condvest.dms import normalize_dms_table, read_dms_file
from condvest.errors import BusyError, CorruptObject, ParameterError
from condvest.lake import DMS_PREFIX, bronze_daily_key, bronze_history_key, checkpoint_key
from condvest.lake_lock import clear_lock, lake_lock, read_lock
from condvest.params import intervals as parse_intervals
from condvest.resample import CompactionParams, ResampleParams
from condvest.resample.run import checkpoint_table, run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import (
    assert_silver_matches,
    bronze_table,
    reference_bars,
    reference_rows,
    silver_frame,
    write_daily,
    write_history,
)

DAYS = sessions_between(dt.date(2024, 1, 2), dt.date(2024, 8, 30))
NS = (2, 3, 5, 21)
IV = ",".join(map(str, NS))


@pytest.fixture
def lake(tmp_path):
    store = LocalStore(tmp_path / "lake")
    return store, Settings(lake_uri=str(tmp_path / "lake"))


def snapshot(store):
    return {o.key: o.etag for o in store.list("") if not o.key.startswith("bronze/")}


def test_parse_intervals():
    assert parse_intervals("3,5, 8,13,21,34") == (3, 5, 8, 13, 21, 34)
    assert parse_intervals([5, 3, 3]) == (3, 5)
    for bad in ("", "3,,5", "0", "-3", "3.5", "3;DROP TABLE x", "abc", [0], [True]):
        with pytest.raises(ParameterError):
            parse_intervals(bad)


def test_bad_parameters_write_nothing(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:10], 1)
    for bad in ("3,x", "0"):
        with pytest.raises(ParameterError):
            run_resample(settings, ResampleParams(bad), store=store)
    with pytest.raises(ParameterError):
        run_resample(settings, ResampleParams("3", force_full_resample="yes"), store=store)
    assert snapshot(store) == {}


def test_empty_lake_says_nothing_to_resample(lake):
    store, settings = lake
    report = run_resample(settings, store=store)
    assert "nothing to resample" in report.message
    assert snapshot(store) == {}
    assert checkpoint_table(settings, store=store).empty


def test_full_incremental_backfill_and_rerun_equal_the_reference(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:100], 1)
    write_history(store, "BBB", DAYS[20:95], 2)
    write_history(store, "CCC", DAYS[60:61], 3)
    r = run_resample(settings, ResampleParams(IV), store=store)
    assert {x.mode for x in r.results} == {"full"}
    assert_silver_matches(store, NS)
    cp = json.loads(store.get(checkpoint_key(3)))
    assert cp["status"] == "complete" and cp["last_processed_session"] == DAYS[99].isoformat()
    assert cp["bars"] == 34 + 25 + 1 and cp["partial_bars"] == 2
    # one new session for some symbols: incremental, only the trailing bars change
    write_daily(store, "AAA", DAYS[100], 10)
    write_daily(store, "BBB", DAYS[95], 11)
    r = run_resample(settings, ResampleParams(IV), store=store)
    assert {x.mode for x in r.results} == {"incremental"}
    assert all(x.symbols_changed == 2 and x.rows_read == 2 for x in r.results)
    assert_silver_matches(store, NS)
    # re-run without new data: nothing written at all
    before = snapshot(store)
    r = run_resample(settings, ResampleParams(IV), store=store)
    assert {x.mode for x in r.results} == {"unchanged"} and snapshot(store) == before
    # a late backfill of an older session shifts BBB's numbering; a correction re-fetches AAA's session
    write_daily(store, "BBB", DAYS[5], 12)
    write_daily(store, "AAA", DAYS[40], 13, ingested=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    write_daily(store, "DDD", DAYS[7], 14)  # a new symbol
    r = run_resample(settings, ResampleParams(IV), store=store)
    assert {x.mode for x in r.results} == {"incremental"}
    assert_silver_matches(store, NS)
    # an older write does not win over the newer history row
    write_daily(store, "CCC", DAYS[60], 15, ingested=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    run_resample(settings, ResampleParams(IV), store=store)
    assert_silver_matches(store, NS)
    # a removed daily file (not compacted) takes its bar away again
    store.delete(bronze_daily_key("BBB", DAYS[5]))
    run_resample(settings, ResampleParams(IV), store=store)
    assert_silver_matches(store, NS)
    incremental = {n: silver_frame(store, n) for n in NS}
    table = checkpoint_table(settings, store=store)
    r = run_resample(settings, ResampleParams(IV, force_full_resample=True), store=store)
    assert {x.mode for x in r.results} == {"full"}
    for n in NS:
        pd.testing.assert_frame_equal(silver_frame(store, n), incremental[n])
    pd.testing.assert_frame_equal(checkpoint_table(settings, store=store), table)


def test_partial_bars_are_flagged_and_rewritten(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:7], 1)
    run_resample(settings, ResampleParams("5"), store=store)
    bars = silver_frame(store, 5)
    assert bars["sessions"].tolist() == [5, 2]
    write_daily(store, "AAA", DAYS[7], 2)
    write_daily(store, "AAA", DAYS[8], 3)
    write_daily(store, "AAA", DAYS[9], 4)
    run_resample(settings, ResampleParams("5"), store=store)
    assert silver_frame(store, 5)["sessions"].tolist() == [5, 5]
    assert_silver_matches(store, (5,))


def test_a_new_interval_triggers_a_full_run_of_the_requested_ones(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:50], 1)
    run_resample(settings, ResampleParams("3"), store=store)
    r = run_resample(settings, ResampleParams("3,55"), store=store)
    assert {x.mode for x in r.results} == {"full"}
    assert_silver_matches(store, (3, 55))


def test_second_run_is_busy_and_a_stale_lock_can_be_cleared(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:10], 1)
    with lake_lock(store, "resample", run_id="holder-run"):
        with pytest.raises(BusyError, match="holder-run") as info:
            run_resample(settings, ResampleParams("3"), store=store)
        assert "since" in str(info.value) and "clear_lock" in str(info.value)
    assert read_lock(store, "resample") is None
    run_resample(settings, ResampleParams("3"), store=store)
    store.put("processing_metadata/_locks/resample.lock", b'{"holder": "h:1", "run_id": "dead", "taken_at": "x"}')
    with pytest.raises(BusyError, match="dead"):
        run_resample(settings, ResampleParams("3"), store=store)
    assert clear_lock(store)["run_id"] == "dead"
    run_resample(settings, ResampleParams("3"), store=store)


def test_corrupt_bronze_object_is_named(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:10], 1)
    store.put(bronze_daily_key("AAA", DAYS[10]), b"PAR1 not really parquet")
    with pytest.raises(CorruptObject, match="date=2024-01-17"):
        run_resample(settings, ResampleParams("3"), store=store)
    assert not store.exists(checkpoint_key(3))


@pytest.mark.parametrize("broken", ["drop close", "close as text"])
def test_a_bronze_object_with_a_missing_or_ill_typed_column_is_named_not_a_healthy_one(lake, broken):
    store, settings = lake
    write_history(store, "AAA", DAYS[:30], 1)
    write_history(store, "BBB", DAYS[:30], 2)
    t = bronze_table("CCC", DAYS[:30], 3)
    if broken == "drop close":
        t = t.drop_columns(["close"])
    else:
        t = t.set_column(t.schema.get_field_index("close"), "close", pa.array(["x"] * t.num_rows))
    buf = io.BytesIO()
    pq.write_table(t, buf)
    store.put(bronze_history_key("CCC"), buf.getvalue())
    with pytest.raises(CorruptObject) as err:
        run_resample(settings, ResampleParams("3"), store=store)
    assert err.value.key == bronze_history_key("CCC"), str(err.value)
    assert not store.exists(checkpoint_key(3)) and not list(store.list("silver/"))


def test_missing_ingested_at_prefers_the_daily_file(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:10], 1, ingested=None)
    write_daily(store, "AAA", DAYS[3], 99, ingested=None)
    run_resample(settings, ResampleParams("3"), store=store)
    assert_silver_matches(store, (3,))
    daily = reference_rows(store)
    assert (
        daily.loc[daily["date"] == DAYS[3], "close"].item()
        == pq.read_table(io.BytesIO(store.get(bronze_daily_key("AAA", DAYS[3])))).column("close")[0].as_py()
    )


def _dms_table(symbols, days, volume_type, ts_kind):
    rows = [(s, d) for s in symbols for d in days]
    stamps = [dt.datetime.fromtimestamp(ny_midnight_epoch_ms(d) / 1000, dt.UTC) for _, d in rows]
    ts = {
        "ms": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
        "us": pa.array(stamps, pa.timestamp("us")),
        "string": pa.array([t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in stamps]),
    }[ts_kind]
    vol = [1_000_001 + i for i in range(len(rows))]
    return pa.table(
        {
            "symbol": [s for s, _ in rows],
            "open": [10.0] * len(rows),
            "high": [11.0] * len(rows),
            "low": [9.0] * len(rows),
            "close": [10.5 + i / 100 for i in range(len(rows))],
            "volume": pa.array(vol, pa.int64()) if volume_type == "int" else pa.array([v + 0.25 for v in vol]),
            "interval": ["1d"] * len(rows),
            "timestamp": pa.array([dt.datetime(2025, 11, 2)] * len(rows), pa.timestamp("us")),
            "timestamp_1": ts,
        }
    )


def test_dms_reader_maps_columns_and_types_explicitly(monkeypatch):
    days = DAYS[:3]
    for vt, tk in (("int", "ms"), ("double", "us"), ("int", "string")):
        t = normalize_dms_table(_dms_table(["AAA"], days, vt, tk), "LOAD1")
        assert t.column("date").to_pylist() == days
        assert t.column("volume").type == pa.float64() and t.column("volume").null_count == 0
        assert t.column("volume").to_pylist()[0] == (1_000_001 if vt == "int" else 1_000_001.25)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    import time

    time.tzset()
    try:
        assert normalize_dms_table(_dms_table(["AAA"], days, "int", "ms"), "k").column("date").to_pylist() == days
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    with pytest.raises(CorruptObject, match="LOAD9.*timestamp_1"):
        normalize_dms_table(_dms_table(["AAA"], days, "int", "ms").drop_columns(["timestamp_1"]), "LOAD9")


def test_dms_export_is_read_beside_bronze(lake):
    store, settings = lake
    files = [("int", "ms"), ("double", "us"), ("int", "string")]
    for i, (vt, tk) in enumerate(files):
        buf = io.BytesIO()
        pq.write_table(_dms_table(["AAA", "BBB"], DAYS[i * 10 : (i + 1) * 10], vt, tk), buf)
        store.put(f"{DMS_PREFIX}/LOAD{i + 1:08d}.parquet", buf.getvalue())
    write_daily(store, "AAA", DAYS[30], 5)
    write_daily(store, "AAA", DAYS[29], 6)  # the same session in DMS and bronze: bronze wins
    run_resample(settings, ResampleParams("3,5"), store=store)
    dms = pa.concat_tables([read_dms_file(store, f"{DMS_PREFIX}/LOAD{i + 1:08d}.parquet") for i in range(3)])
    d = dms.to_pandas()[["symbol", "date", "open", "high", "low", "close", "volume"]]
    d["date"] = pd.to_datetime(d["date"]).dt.date
    b = reference_rows(store)
    rows = pd.concat([b, d[~d.set_index(["symbol", "date"]).index.isin(b.set_index(["symbol", "date"]).index)]])
    for n in (3, 5):
        pd.testing.assert_frame_equal(silver_frame(store, n), reference_bars(rows, n), check_dtype=False)
    assert silver_frame(store, 3)["volume"].iloc[0] == 1_000_001 + 1_000_002 + 1_000_003
    store.put(f"{DMS_PREFIX}/LOAD00000002.parquet", b"truncated")
    with pytest.raises(CorruptObject, match="LOAD00000002"):
        run_resample(settings, ResampleParams("3,5"), store=store)


def test_on_s3_full_incremental_compaction_and_lock(s3_settings):
    from condvest.resample.compaction import compact_bronze
    from condvest.storage import open_store

    store = open_store(settings=s3_settings)
    write_history(store, "AAA", DAYS[:40], 1)
    for i, d in enumerate(DAYS[40:46]):
        write_daily(store, "AAA", d, 10 + i)
    run_resample(s3_settings, ResampleParams("3,5"), store=store)
    assert_silver_matches(store, (3, 5))
    write_daily(store, "AAA", DAYS[46], 20)
    write_daily(store, "AAA", DAYS[3], 21, ingested=dt.datetime(2025, 5, 1, tzinfo=dt.UTC))
    assert {r.mode for r in run_resample(s3_settings, ResampleParams("3,5"), store=store).results} == {"incremental"}
    assert_silver_matches(store, (3, 5))
    compact_bronze(s3_settings, CompactionParams(keep_sessions=2, min_fold_sessions=1), store=store)
    assert {r.mode for r in run_resample(s3_settings, ResampleParams("3,5"), store=store).results} == {"unchanged"}
    assert_silver_matches(store, (3, 5))
    with lake_lock(store, "resample", run_id="s3-holder"):
        with pytest.raises(BusyError, match="s3-holder"):
            run_resample(s3_settings, ResampleParams("3,5"), store=store)


@pytest.mark.parametrize("tz", ["Asia/Tokyo", "America/Los_Angeles"])
def test_host_time_zone_changes_nothing(tmp_path, monkeypatch, tz):
    import time

    results = []
    for zone in ("UTC", tz):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        store = LocalStore(tmp_path / zone.replace("/", "_"))
        write_history(store, "AAA", DAYS[:30], 1)
        write_daily(store, "AAA", DAYS[30], 2)
        run_resample(Settings(lake_uri=store.uri), ResampleParams("3,5"), store=store)
        results.append([silver_frame(store, n) for n in (3, 5)])
    monkeypatch.delenv("TZ")
    time.tzset()
    for a, b in zip(*results, strict=True):
        pd.testing.assert_frame_equal(a, b)
