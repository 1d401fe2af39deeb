"""A full rebuild split over shards: staged parts, one commit, silver equal to the unsharded rebuild."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from condvest.calendar import sessions_between
from condvest.errors import ParameterError
from condvest.lake import checkpoint_key
from condvest.resample import ResampleParams
from condvest.resample.run import checkpoint_table, run_resample
from condvest.settings import Settings
from condvest.shards import Shard, ShardsIncomplete, shard_of
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, silver_frame, write_daily, write_history

DAYS = sessions_between(dt.date(2023, 11, 1), dt.date(2024, 8, 30))
NS = (3, 5, 21)
IV = ",".join(map(str, NS))
SYMBOLS = [f"S{i:02d}" for i in range(23)]


def _lake(root) -> tuple[LocalStore, Settings]:
    return LocalStore(root), Settings(lake_uri=str(root))


def _fill(store: LocalStore) -> None:
    for k, sym in enumerate(SYMBOLS):
        start = (k * 7) % 60  # listed at different times
        write_history(store, sym, DAYS[start:-3], seed=k)
        for d in DAYS[-3:]:
            write_daily(store, sym, d, seed=100 + k)


def _silver_files(store: LocalStore) -> dict[str, pd.DataFrame]:
    return {
        o.key: pq.read_table(io.BytesIO(store.get(o.key))).to_pandas()
        for o in store.list("silver/")
        if o.key.endswith(".parquet")
    }


def _sharded(settings: Settings, count: int, group: str = "G1") -> list:
    reports = []
    for i in range(count):
        reports.append(run_resample(settings, ResampleParams(intervals=IV, shard=f"{i}/{count}", shard_group=group)))
    reports.append(run_resample(settings, ResampleParams(intervals=IV, shard=f"commit/{count}", shard_group=group)))
    return reports


def test_shard_of_is_stable_and_spreads():
    # CRC-32 of the UTF-8 name: the same in every process, machine and Python (not the salted hash())
    assert [shard_of(s, 4) for s in ("AAPL", "MSFT", "BRK.B")] == [0, 3, 0]
    assert len({shard_of(s, 4) for s in SYMBOLS}) == 4


def test_sharded_rebuild_equals_unsharded_file_for_file(tmp_path):
    plain, plain_settings = _lake(tmp_path / "plain")
    _fill(plain)
    shutil.copytree(tmp_path / "plain", tmp_path / "sharded")
    sharded, sharded_settings = _lake(tmp_path / "sharded")
    run_resample(plain_settings, ResampleParams(intervals=IV, force_full_resample=True))
    reports = _sharded(sharded_settings, 4)
    assert reports[-1].message.startswith("committed 4 shard(s)")
    a, b = _silver_files(plain), _silver_files(sharded)
    assert sorted(a) == sorted(b)
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], obj=key)
    # byte for byte: the commit orders each month from the shards' runs of symbols, not by sorting its rows
    assert _bytes_of(plain, "silver/") == _bytes_of(sharded, "silver/")
    assert_silver_matches(sharded, NS)
    cols = ["interval", "last_processed_session", "bars", "complete_bars", "partial_bars", "symbols"]
    pd.testing.assert_frame_equal(checkpoint_table(plain_settings)[cols], checkpoint_table(sharded_settings)[cols])
    assert not list(sharded.list("processing_metadata/shards/"))  # the staging area is gone

    # the next incremental run continues from the merged state exactly as from an unsharded one
    for store in (plain, sharded):
        write_daily(store, "S03", dt.date(2024, 9, 3), seed=999)
        write_history(store, "S07", DAYS[10:-3], seed=77)  # a correction: S07 re-read whole
    r_plain = run_resample(plain_settings, ResampleParams(intervals=IV))
    r_sharded = run_resample(sharded_settings, ResampleParams(intervals=IV))
    assert [r.mode for r in r_sharded.results] == ["incremental"] * len(NS)
    assert r_sharded.to_frame()["symbols_changed"].tolist() == r_plain.to_frame()["symbols_changed"].tolist()
    for n in NS:
        pd.testing.assert_frame_equal(silver_frame(plain, n), silver_frame(sharded, n), obj=f"{n}d")
    assert_silver_matches(sharded, NS)


def test_a_missing_shard_fails_the_commit_which_writes_nothing(tmp_path):
    store, settings = _lake(tmp_path / "lake")
    _fill(store)
    run_resample(settings, ResampleParams(intervals=IV))
    before = {o.key: o.etag for o in store.list("") if not o.key.startswith("processing_metadata/shards/")}
    for i in (0, 1, 3):  # shard 2 failed or was killed before its done record
        r = run_resample(settings, ResampleParams(intervals=IV, shard=f"{i}/4", shard_group="G2"))
        assert r.results[0].mode == "staged"
    live = {o.key: o.etag for o in store.list("") if not o.key.startswith("processing_metadata/shards/")}
    assert live == before  # shards write nothing live
    with pytest.raises(ShardsIncomplete, match=r"shard 2/4.*wrote nothing"):
        run_resample(settings, ResampleParams(intervals=IV, shard="commit/4", shard_group="G2"))
    after = {o.key: o.etag for o in store.list("") if not o.key.startswith("processing_metadata/shards/")}
    assert after == before
    # the shard runs again; the commit then succeeds
    run_resample(settings, ResampleParams(intervals=IV, shard="2/4", shard_group="G2"))
    run_resample(settings, ResampleParams(intervals=IV, shard="commit/4", shard_group="G2"))
    assert_silver_matches(store, NS)
    assert json.loads(store.get(checkpoint_key(3)))["mode"] == "full"


def test_a_retried_shard_replaces_its_own_part(tmp_path):
    store, settings = _lake(tmp_path / "lake")
    _fill(store)
    _sharded(settings, 2, group="G3")
    # shard 0 ran once, then bronze lost most of its symbols' history before it ran again
    own = [s for s in SYMBOLS if Shard(0, 2, "x").holds(s)]
    for s in own:
        write_history(store, s, DAYS[-10:-3], seed=5)
    run_resample(settings, ResampleParams(intervals=IV, shard="0/2", shard_group="G4"))
    run_resample(settings, ResampleParams(intervals=IV, shard="0/2", shard_group="G4"))  # a retry
    run_resample(settings, ResampleParams(intervals=IV, shard="1/2", shard_group="G4"))
    run_resample(settings, ResampleParams(intervals=IV, shard="commit/2", shard_group="G4"))
    assert_silver_matches(store, NS)  # old months of the shortened histories are gone


def test_shard_parameters_are_checked():
    for shard, group in (("4/4", "G"), ("x/4", "G"), ("1/0", "G"), ("1/4", ""), ("", "G"), ("1/4", "a/b")):
        with pytest.raises(ParameterError):
            ResampleParams(shard=shard, shard_group=group).check()
    assert not ResampleParams(shard="1/4", shard_group="G").compacts
    assert ResampleParams(shard="commit/4", shard_group="G").compacts


def _bytes_of(store: LocalStore, prefix: str) -> dict[str, bytes]:
    return {o.key: store.get(o.key) for o in store.list(prefix)}


def test_a_full_rebuild_beyond_its_memory_runs_in_symbol_batches_byte_for_byte(tmp_path):
    plain, plain_settings = _lake(tmp_path / "plain")
    _fill(plain)
    shutil.copytree(tmp_path / "plain", tmp_path / "batched")
    batched, settings = _lake(tmp_path / "batched")
    # a run that stopped mid-way left its batches' staging behind
    batched.put("processing_metadata/shards/resample/batched-old/silver_3d/2024/part-0.parquet", b"stale")
    one = run_resample(plain_settings, ResampleParams(intervals=IV, force_full_resample=True))
    rows = sum(r.rows_read for r in one.results[:1])
    # about 7,000 bronze rows; 200 kB of memory allows 2,000 a batch
    r = run_resample(settings, ResampleParams(intervals=IV, force_full_resample=True), memory_limit="200KB")
    assert "full rebuild in 4 symbol batches, to stay within 200KB" in r.message, r.message
    assert [x.rows_read for x in r.results] == [rows] * len(NS)
    assert [x.bars_written for x in r.results] == [x.bars_written for x in one.results]
    assert _bytes_of(plain, "silver/") == _bytes_of(batched, "silver/")  # the same month files, byte for byte
    cols = ["interval", "last_processed_session", "bars", "complete_bars", "partial_bars", "symbols", "status"]
    pd.testing.assert_frame_equal(checkpoint_table(plain_settings)[cols], checkpoint_table(settings)[cols])
    assert not list(batched.list("processing_metadata/shards/"))  # its own staging and the stale one are gone
    # the next daily session updates both the same way, incrementally
    for k, store in enumerate((plain, batched)):
        for i, sym in enumerate(SYMBOLS[:5]):
            write_daily(store, sym, DAYS[-1] + dt.timedelta(days=3), seed=300 + i)
        rep = run_resample(plain_settings if k == 0 else settings, ResampleParams(intervals=IV), memory_limit="200KB")
        assert {x.mode for x in rep.results} == {"incremental"}, rep.message
    assert _bytes_of(plain, "silver/") == _bytes_of(batched, "silver/")
    assert_silver_matches(batched, NS)


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_a_batched_rebuild_that_crashed_recovers_to_the_same_silver(tmp_path):
    import os
    import subprocess
    import sys

    from condvest.crash import CRASH_EXIT_CODE
    from condvest.lake_lock import clear_lock

    store, settings = _lake(tmp_path / "lake")
    _fill(store)
    script = (
        "from condvest.settings import Settings\nfrom condvest.resample import ResampleParams, run_resample\n"
        f"run_resample(Settings.from_env(), ResampleParams({IV!r}, force_full_resample=True))\n"
    )
    env = {
        **os.environ,
        "CONDVEST_LAKE_URI": str(tmp_path / "lake"),
        "CONDVEST_DUCKDB_MEMORY_LIMIT": "200KB",
        "CONDVEST_CRASH_AT": "resample.shard_mid_stage",
    }
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == CRASH_EXIT_CODE, p.stderr[-2000:]
    assert list(store.list("processing_metadata/shards/resample/batched-"))  # it stopped while staging
    assert clear_lock(store) is not None
    r = run_resample(settings, ResampleParams(intervals=IV), memory_limit="200KB")
    assert "symbol batches" in r.message
    assert_silver_matches(store, NS)
    assert not list(store.list("processing_metadata/shards/"))


def test_the_commit_orders_a_year_from_the_shards_runs_as_a_sort_would():
    import pyarrow as pa
    import pyarrow.compute as pc

    from condvest.resample.sharded import _in_order

    d = dt.date
    # two shards' staged parts of one year, each in (month, symbol, date) order, their symbols interleaving
    a = pa.table(
        {
            "symbol": ["A", "C", "C", "A", "C"],
            "date": [d(2024, 1, 2), d(2024, 1, 3), d(2024, 1, 9), d(2024, 3, 1), d(2024, 3, 4)],
            "v": [1, 2, 3, 4, 5],
        }
    )
    b = pa.table({"symbol": ["B", "D", "B"], "date": [d(2024, 1, 5), d(2024, 1, 2), d(2024, 2, 7)], "v": [6, 7, 8]})
    ordered, months = _in_order([a, b])
    both = pa.concat_tables([a, b])
    # what sorting every row by (month, symbol, date) gives
    keyed = both.append_column("month", pc.month(both["date"]))
    expect = both.take(pc.sort_indices(keyed, [("month", "ascending"), ("symbol", "ascending"), ("date", "ascending")]))
    assert ordered.equals(expect)
    assert ordered["v"].to_pylist() == [1, 6, 2, 3, 7, 8, 4, 5]
    assert months.tolist() == [[1, 0, 5], [2, 5, 6], [3, 6, 8]]  # month, first row, end row
    # one part alone is already in order: kept as it is
    alone, m = _in_order([a])
    assert alone["v"].to_pylist() == [1, 2, 3, 4, 5] and m.tolist() == [[1, 0, 3], [3, 3, 5]]


def test_a_large_staging_area_is_cleared_in_chunks(tmp_path):
    from condvest.shards import clear_staging, staging_prefix

    store = LocalStore(tmp_path)
    keys = [f"{staging_prefix('resample', 'G9')}silver_3d/{i // 16:04d}/part-{i % 16}.arrow" for i in range(2500)]
    store.put_many([(k, b"x") for k in keys])
    store.put("processing_metadata/shards/resample/G10/done/part-0.json", b"{}")
    assert clear_staging(store, "resample", "G9") == 2500
    assert not list(store.list(staging_prefix("resample", "G9")))
    assert [o.key for o in store.list("processing_metadata/shards/")] == [
        "processing_metadata/shards/resample/G10/done/part-0.json"
    ]  # another run's staging is kept


def test_a_part_staged_by_the_older_parquet_staging_makes_the_commit_refuse(tmp_path):
    store, settings = _lake(tmp_path)
    _fill(store)
    for i in range(2):
        run_resample(settings, ResampleParams(intervals=IV, shard=f"{i}/2", shard_group="G5"))
    # shard 1's years as an older version staged them (Parquet): the commit does not read them as this version's
    for o in list(store.list("processing_metadata/shards/resample/G5/silver_")):
        if o.key.endswith("/part-1.arrow"):
            store.put(o.key.removesuffix(".arrow") + ".parquet", store.get(o.key))
            store.delete(o.key)
    with pytest.raises(ShardsIncomplete, match=r"shard 1/2"):
        run_resample(settings, ResampleParams(intervals=IV, shard="commit/2", shard_group="G5"))
    assert not list(store.list("silver/"))
    run_resample(settings, ResampleParams(intervals=IV, shard="1/2", shard_group="G5"))  # it runs again
    run_resample(settings, ResampleParams(intervals=IV, shard="commit/2", shard_group="G5"))
    assert_silver_matches(store, NS)
