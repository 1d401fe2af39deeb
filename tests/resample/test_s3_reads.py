"""02_resample's bronze read on S3: objects fetched many at a time (``storage.local_files``) give the silver a local
lake gives, and a bad object among many is still named (never a healthy one)."""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condvest.calendar import sessions_between
from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import bronze_history_key, checkpoint_key
from condvest.lake_read import connect, load_rows
from condvest.resample import ResampleParams
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore, Store, open_store
from tests.fixtures.resample import (
    bronze_table,
    reference_bars,
    reference_rows,
    silver_frame,
    write_daily,
    write_history,
)

DAYS = sessions_between(dt.date(2024, 1, 2), dt.date(2024, 5, 31))
#: more symbols than ``get_many`` keeps ahead on S3 (2 x 16), so its window slides
SYMBOLS = [f"S{i:02d}" for i in range(45)]
NS = (3, 5)


def _fill(store: Store) -> None:
    for k, sym in enumerate(SYMBOLS):
        days = DAYS[k % 7 : len(DAYS) - k % 5]  # histories of different lengths and starts
        write_history(store, sym, days[:-2], k)
        for j, d in enumerate(days[-2:]):  # a later daily file for the last two sessions (no batch: read one by one)
            write_daily(store, sym, d, 100 + k + j)
    # one symbol from the previous fetcher: no ``date``, no ``ingested_at`` (the read's fallback SQL)
    old = bronze_table("OLD", DAYS[:30], 999).drop_columns(["date", "ingested_at"])
    buf = io.BytesIO()
    pq.write_table(old, buf)
    store.put(bronze_history_key("OLD"), buf.getvalue())


def test_full_rebuild_on_s3_equals_the_local_one(s3_settings, tmp_path) -> None:
    s3 = open_store(settings=s3_settings)
    local = LocalStore(tmp_path / "lake")
    for store in (s3, local):
        _fill(store)
    run_resample(s3_settings, ResampleParams("3,5", True), store=s3)
    run_resample(Settings(lake_uri=str(local.root)), ResampleParams("3,5", True), store=local)
    rows = reference_rows(s3)
    for n in NS:
        got, want = silver_frame(s3, n), silver_frame(local, n)
        assert set(got["symbol"]) == {*SYMBOLS, "OLD"}
        pd.testing.assert_frame_equal(got, want, obj=f"silver {n}d, S3 against local")
        # the documented bars (the reference reads files with a ``date`` column: all but OLD's)
        ref = reference_bars(rows[rows["symbol"] != "OLD"], n)
        mine = got[got["symbol"] != "OLD"].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, ref, check_dtype=False, obj=f"silver {n}d")


@pytest.mark.parametrize("broken", ["not parquet", "drop close", "close as text"])
def test_a_bad_history_among_many_on_s3_is_named(s3_settings, broken) -> None:
    store = open_store(settings=s3_settings)
    for k, sym in enumerate(SYMBOLS):
        write_history(store, sym, DAYS, k)
    bad = bronze_history_key(SYMBOLS[37])  # after the first window of reads
    if broken == "not parquet":
        data = b"PAR1 not really parquet"
    else:
        t = bronze_table(SYMBOLS[37], DAYS, 37)
        if broken == "drop close":
            t = t.drop_columns(["close"])
        else:
            t = t.set_column(t.schema.get_field_index("close"), "close", pa.array(["x"] * t.num_rows))
        buf = io.BytesIO()
        pq.write_table(t, buf)
        data = buf.getvalue()
    store.put(bad, data)
    with pytest.raises(CorruptObject) as err:
        run_resample(s3_settings, ResampleParams("3"), store=store)
    assert err.value.key == bad, str(err.value)
    assert not store.exists(checkpoint_key(3)) and not list(store.list("silver/"))


def test_a_missing_object_on_s3_is_named(s3_settings) -> None:
    store = open_store(settings=s3_settings)
    keys = []
    for k, sym in enumerate(SYMBOLS):
        write_history(store, sym, DAYS, k)
        keys.append(bronze_history_key(sym))
    gone = bronze_history_key("GONE")  # listed, then deleted before the read
    con = connect(store, threads=1)
    try:
        with pytest.raises(ObjectNotFound) as err:
            load_rows(con, store, "rows", [*keys[:30], gone, *keys[30:]], dms=False)
        assert err.value.key == gone
        assert load_rows(con, store, "rows", keys, dms=False) == len(SYMBOLS) * len(DAYS)
    finally:
        con.close()
