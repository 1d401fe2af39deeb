"""A synthetic AWS DMS full-load export of ``raw_ohlcv``: ``public/raw_ohlcv/LOAD00000001.parquet`` ...

Columns: symbol, open, high, low, close, volume, interval ('1d'), ``timestamp`` and ``timestamp_1``.

* ``timestamp`` is a DMS artefact: the load time (naive ``timestamp[us]``, UTC wall clock), NOT the bar.
* ``timestamp_1`` is the bar: the UTC instant of **00:00 New York** on the session (as Polygon stamps
  range bars), so its New York date is the session date (and so is its UTC date: 04:00 or 05:00 UTC).

Rows are spread over the files by a hash of (symbol, session), as a DMS load splits a table scan, so
every file holds every symbol. With ``quirks=True`` the files disagree, as the real export does
(``dms_file_specs`` says which file has what):

* ``volume`` is int64 in even-numbered files (LOAD00000001, 03, ...) and double in the others;
  bars with a fractional volume are only ever written to double files;
* ``timestamp_1`` is ``timestamp[ms, tz=UTC]`` in files 1, 4, 7, ..., ``timestamp[us, tz=UTC]`` in the
  others, except the last file (when there are 3 or more), where it is an ISO string
  ``YYYY-MM-DDTHH:MM:SSZ``;
* about fifty (symbol, session) rows appear twice, in two files of the same volume type.

With ``quirks=False``: double volume, ``timestamp[us, tz=UTC]`` everywhere, no duplicates.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from condvest.calendar import ny_midnight_epoch_ms
from condvest.errors import ParameterError
from condvest.lake import DMS_PREFIX
from condvest.offline.market import SyntheticMarket, _mix, _sessions
from condvest.storage import Store

log = logging.getLogger(__name__)

__all__ = ["DmsFileSpec", "dms_file_specs", "write_dms_export"]

_EPOCH = dt.date(1970, 1, 1).toordinal()
_LOAD_TIME = dt.datetime(2025, 11, 2, 3, 14, 15, 926535)  # naive UTC, as DMS writes it


@dataclass(frozen=True)
class DmsFileSpec:
    key: str
    volume_type: str  # "int64" or "double"
    timestamp_1: str  # "ms", "us" or "string"

    def schema(self) -> pa.Schema:
        ts1 = {"ms": pa.timestamp("ms", tz="UTC"), "us": pa.timestamp("us", tz="UTC"), "string": pa.string()}
        return pa.schema(
            [
                ("symbol", pa.string()),
                ("open", pa.float64()),
                ("high", pa.float64()),
                ("low", pa.float64()),
                ("close", pa.float64()),
                ("volume", pa.int64() if self.volume_type == "int64" else pa.float64()),
                ("interval", pa.string()),
                ("timestamp", pa.timestamp("us")),
                ("timestamp_1", ts1[self.timestamp_1]),
            ]
        )


def dms_file_specs(n_files: int = 8, quirks: bool = True) -> list[DmsFileSpec]:
    """Which file gets which column types."""
    if n_files < 1:
        raise ParameterError(f"n_files must be >= 1, got {n_files}", parameter="n_files")
    specs = []
    for i in range(n_files):
        key = f"{DMS_PREFIX}/LOAD{i + 1:08d}.parquet"
        if not quirks:
            specs.append(DmsFileSpec(key, "double", "us"))
            continue
        vol = "int64" if i % 2 == 0 and n_files > 1 else "double"
        ts = "string" if n_files >= 3 and i == n_files - 1 else "ms" if i % 3 == 0 else "us"
        specs.append(DmsFileSpec(key, vol, ts))
    return specs


@lru_cache(maxsize=1)
def _midnights() -> np.ndarray:
    """Epoch ms of 00:00 New York of every session (indexed like ``market._sessions()``)."""
    return np.fromiter((ny_midnight_epoch_ms(d) for d in _sessions()[2]), dtype=np.int64)


@lru_cache(maxsize=1)
def _midnight_strings() -> pa.Array:
    ts = pa.array(_midnights(), pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("s", tz="UTC"))
    return pc.strftime(ts, format="%Y-%m-%dT%H:%M:%SZ")


def _session_idx(days: np.ndarray) -> np.ndarray:
    return np.searchsorted(_sessions()[0], days.astype(np.int64) + _EPOCH)


def _placement(
    table: pa.Table, positions: dict[str, int], specs: list[DmsFileSpec], dup_mod: int, quirks: bool
) -> tuple[np.ndarray, np.ndarray]:
    """For every row: the file it goes to, and the file of its duplicate (-1: none)."""
    enc = pc.dictionary_encode(table["symbol"]).combine_chunks()
    pos = np.array([positions[s] for s in enc.dictionary.to_pylist()], dtype=np.int64)[enc.indices.to_numpy()]
    days = table["date"].combine_chunks().view(pa.int32()).to_numpy().astype(np.int64)
    h = _mix((pos * 1_000_003 + days).astype(np.uint64))
    n = len(specs)
    file_id = (h % np.uint64(n)).astype(np.int64)
    dup = np.full(len(file_id), -1, dtype=np.int64)
    if not quirks:
        return file_id, dup
    doubles = np.array([i for i, s in enumerate(specs) if s.volume_type == "double"])
    vol = table["volume"].to_numpy()
    frac = vol != np.floor(vol)
    file_id[frac] = doubles[(h[frac] >> np.uint64(8)) % np.uint64(len(doubles))]
    is_dup = ((h >> np.uint64(20)) % np.uint64(dup_mod)) == np.uint64(0)
    for i in np.flatnonzero(is_dup):
        same = [j for j, s in enumerate(specs) if s.volume_type == specs[file_id[i]].volume_type]
        dup[i] = same[(same.index(file_id[i]) + 1) % len(same)]
    return file_id, dup


def _file_table(table: pa.Table, spec: DmsFileSpec, load_us: int) -> pa.Table:
    idx = _session_idx(table["date"].combine_chunks().view(pa.int32()).to_numpy())
    if spec.timestamp_1 == "string":
        ts1 = pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), _midnight_strings()).cast(pa.string())
    else:
        ts1 = pa.array(_midnights()[idx], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        if spec.timestamp_1 == "us":
            ts1 = ts1.cast(pa.timestamp("us", tz="UTC"))
    volume = table["volume"]
    if spec.volume_type == "int64":
        volume = volume.cast(pa.int64())  # safe cast: raises if a fractional volume slipped in
    n = table.num_rows
    load = pa.array(load_us + np.arange(n, dtype=np.int64), pa.int64()).cast(pa.timestamp("us"))
    return pa.table(
        [
            table["symbol"],
            table["open"],
            table["high"],
            table["low"],
            table["close"],
            volume,
            pa.repeat(pa.scalar("1d", pa.string()), n),
            load,
            ts1,
        ],
        schema=spec.schema(),
    )


def write_dms_export(
    store: Store,
    market: SyntheticMarket,
    start: dt.date,
    end: dt.date,
    *,
    symbols: Sequence[str] | None = None,
    n_files: int = 8,
    quirks: bool = True,
    chunk_rows: int = 1_000_000,
    progress: bool = False,
) -> list[str]:
    """Write the export of ``market``'s bars in [start, end] under ``public/raw_ohlcv/``; return the keys.

    Rows are generated and written ``chunk_rows`` at a time (whole symbols), so memory stays bounded;
    the files are put into ``store`` at the end. ``progress`` shows a tqdm bar over the rows.
    """
    specs = dms_file_specs(n_files, quirks)
    positions = {s: i for i, s in enumerate(market.symbols)}
    total = market.expected_rows(start, end)
    dup_mod = max(2, total // 50)
    rows = [0] * n_files
    with tempfile.TemporaryDirectory(prefix="condvest-dms-") as tmp:
        paths = [os.path.join(tmp, f"{i}.parquet") for i in range(n_files)]
        writers = [
            pq.ParquetWriter(p, s.schema(), use_dictionary=["symbol", "interval", "timestamp_1"])
            for p, s in zip(paths, specs, strict=True)
        ]
        bar = tqdm(total=total, unit="rows", desc="DMS export", disable=not progress)
        try:
            for chunk in market.iter_tables(start, end, symbols, chunk_rows=chunk_rows):
                bar.update(chunk.num_rows)
                file_id, dup = _placement(chunk, positions, specs, dup_mod, quirks)
                for i, spec in enumerate(specs):
                    take = np.concatenate([np.flatnonzero(file_id == i), np.flatnonzero(dup == i)])
                    if len(take):
                        part = _file_table(chunk.take(pa.array(take)), spec, _load_us(i, rows[i]))
                        writers[i].write_table(part)
                        rows[i] += part.num_rows
        finally:
            bar.close()
            for w in writers:
                w.close()
        for path, spec in zip(paths, specs, strict=True):
            with open(path, "rb") as f:
                store.put(spec.key, f.read())
    log.info("dms_export files=%d rows=%d start=%s end=%s quirks=%s", n_files, sum(rows), start, end, quirks)
    return [s.key for s in specs]


def _load_us(file_index: int, offset: int) -> int:
    base = int((_LOAD_TIME - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + _LOAD_TIME.microsecond
    return base + file_index * 420_000_000 + offset
