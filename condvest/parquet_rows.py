"""Parquet bytes of bronze tables: a history or batch file (``parquet_bytes``, snappy), and a day's one-row
daily files (``row_files``), byte for byte what pyarrow writes for each row (``row_parquet_bytes``), encoded
once per layout and patched (property-tested against pyarrow in tests/core/test_parquet_rows.py).

    parquet_bytes(table) -> bytes                 snappy, with statistics (history, batch and quarantine files)
    row_parquet_bytes(table) -> bytes             a file of one or a few rows: uncompressed, no statistics
    row_files(table) -> list[bytes]               row_parquet_bytes of each row, encoded per layout
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["parquet_bytes", "row_files", "row_parquet_bytes"]


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def row_parquet_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of a file of one or a few rows (a daily file): uncompressed, no column statistics and no
    dictionary pages, which a reader gains nothing from in one row and which cost most of the encoding."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", write_statistics=False, use_dictionary=False)
    return buf.getvalue()


def row_files(table: pa.Table) -> list[bytes]:
    """``row_parquet_bytes`` of each row of ``table`` (one file per row, as a daily fetch writes), byte for byte.

    Encoding each one-row file with pyarrow costs a fixed amount of CPU per file, whatever its size (the
    figures are in BENCHMARKS.md, 01_fetch and issue 12's third round). Such files differ only where their
    values are: rows whose text values have the same lengths and that hold no null share one layout. So one
    file per layout is encoded by pyarrow, and a second one with every value changed shows where each value
    lies; the other rows' files are that file with their values copied in. Each layout is checked by encoding
    one more row with pyarrow and comparing the bytes; a layout that fails the check, rows with nulls and
    column types other than fixed-width and text are encoded by pyarrow itself."""
    n = table.num_rows
    if n == 0:
        return []
    table = table.combine_chunks()
    cols = [table.column(i).chunk(0) for i in range(table.num_columns)]  # one chunk each after combine_chunks
    out: list[bytes | None] = [None] * n
    if not all(_fixed_width(a.type) or _is_text(a.type) for a in cols):
        return [row_parquet_bytes(table.slice(i, 1)) for i in range(n)]
    nulls = np.zeros(n, dtype=bool)
    for a in cols:
        if a.null_count:
            nulls |= a.is_null().to_numpy(zero_copy_only=False)
    lengths = [pc.binary_length(a).to_numpy(zero_copy_only=False) for a in cols if _is_text(a.type)]
    layout = np.stack(lengths, axis=1) if lengths else np.zeros((n, 0), dtype=np.int64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in np.flatnonzero(~nulls).tolist():
        groups.setdefault(tuple(layout[i].tolist()), []).append(i)
    for idx in groups.values():
        files = _patched_files(table, cols, np.asarray(idx))
        for j, i in enumerate(idx):
            out[i] = files[j] if files is not None else row_parquet_bytes(table.slice(i, 1))
    return [f if f is not None else row_parquet_bytes(table.slice(i, 1)) for i, f in enumerate(out)]


def _fixed_width(t: pa.DataType) -> bool:
    return pa.types.is_primitive(t) and not pa.types.is_boolean(t) and t.bit_width % 8 == 0


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_binary(t)


def _value_bytes(a: pa.Array, rows: np.ndarray, width: int | None = None) -> np.ndarray:
    """The raw bytes of rows ``rows`` of ``a`` (no nulls there), one row per line: fixed-width values as stored,
    text values (all ``width`` bytes long) from the data buffer."""
    if _fixed_width(a.type):
        w = a.type.bit_width // 8
        data = np.frombuffer(a.buffers()[1], dtype=np.uint8)
        return data[(a.offset + rows)[:, None] * w + np.arange(w)]
    offsets = np.frombuffer(a.buffers()[1], dtype=np.int32)[a.offset : a.offset + len(a) + 1]
    data = np.frombuffer(a.buffers()[2], dtype=np.uint8) if a.buffers()[2] is not None else np.zeros(0, np.uint8)
    return data[offsets[rows][:, None] + np.arange(width or 0)]


def _changed(a: pa.Array, row: int) -> pa.Array:
    """Row ``row`` of ``a`` with every byte of its value changed (text stays ASCII of the same length)."""
    if _fixed_width(a.type):
        raw = _value_bytes(a, np.array([row]))[0] ^ 0xFF
        return pa.Array.from_buffers(a.type, 1, [None, pa.py_buffer(raw.tobytes())])
    value = a[row].as_py()
    raw = value.encode() if isinstance(value, str) else value
    other = bytes(ord("a") if b != ord("a") else ord("b") for b in raw)
    return pa.array([other.decode() if isinstance(value, str) else other], a.type)


def _patched_files(table: pa.Table, cols: list[pa.Array], idx: np.ndarray) -> list[bytes] | None:
    """The files of rows ``idx`` (one layout, no nulls) patched into a file pyarrow encoded; ``None`` when the
    layout cannot be found or fails its check (the caller then encodes the rows with pyarrow)."""
    first = int(idx[0])
    base = np.frombuffer(row_parquet_bytes(table.slice(first, 1)), dtype=np.uint8)
    if len(idx) == 1:
        return [base.tobytes()]
    variant = pa.Table.from_arrays([_changed(a, first) for a in cols], schema=table.schema)
    moved = np.frombuffer(row_parquet_bytes(variant), dtype=np.uint8)
    if len(moved) != len(base):
        return None
    diff = np.flatnonzero(base != moved)
    widths = [
        a.type.bit_width // 8 if _fixed_width(a.type) else int(pc.binary_length(a[first : first + 1])[0].as_py())
        for a in cols
    ]
    # each value is one run of changed bytes, in column order (page headers and levels between them are equal)
    starts = diff[np.r_[True, np.diff(diff) > 1]] if len(diff) else diff
    runs = np.diff(np.r_[np.flatnonzero(np.r_[True, np.diff(diff) > 1]), len(diff)]) if len(diff) else diff
    if [int(r) for r in runs] != [w for w in widths if w]:
        return None
    files = np.tile(base, (len(idx), 1))
    at = iter(starts.tolist())
    for a, w in zip(cols, widths, strict=True):
        if w:
            p = next(at)
            files[:, p : p + w] = _value_bytes(a, idx, w)
    out = [f.tobytes() for f in files]
    if out[1] != row_parquet_bytes(table.slice(int(idx[1]), 1)):  # the check: pyarrow's own bytes for a second row
        return None
    return out
