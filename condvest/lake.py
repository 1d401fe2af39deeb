"""Lake paths (keys relative to the lake root), the only place that spells them.

public/raw_ohlcv/LOAD*.parquet                         legacy AWS DMS export
bronze/raw_ohlcv/symbol=AAPL/date=2025-10-17.parquet   daily increment, one file per symbol and session
bronze/raw_ohlcv/symbol=AAPL/data.parquet              compacted history of one symbol
bronze/_manifest/sessions_2025.json                    sessions complete in bronze, one object a year
bronze/_changes/<run_id>-<id>.parquet                  the daily files one write changed (condvest.changes)
bronze/_quarantine/date=2025-10-17/<run>.parquet       rows that failed the bar checks, with a reason
bronze/_suspect/date=2025-10-17/<run>.parquet          moves beyond the limits with no split recorded (stored)
bronze/_corporate_actions/splits.parquet              the splits 01_fetch has read (Polygon's reference)
bronze/_corporate_actions/basis.json                  per symbol, the split basis of its bronze history
silver/silver_3d/year=2025/month=10/data_3d_202510.parquet
processing_metadata/silver_3d_checkpoint.json
"""

from __future__ import annotations

import datetime as dt
import re

from condvest import params

BRONZE_PREFIX = "bronze/raw_ohlcv"
MANIFEST_PREFIX = "bronze/_manifest"
QUARANTINE_PREFIX = "bronze/_quarantine"
BATCH_PREFIX = "bronze/_batches"
SUSPECT_PREFIX = "bronze/_suspect"
CHANGES_PREFIX = "bronze/_changes"
CORPORATE_ACTIONS_PREFIX = "bronze/_corporate_actions"
SPLITS_KEY = f"{CORPORATE_ACTIONS_PREFIX}/splits.parquet"
BASIS_KEY = f"{CORPORATE_ACTIONS_PREFIX}/basis.json"
DMS_PREFIX = "public/raw_ohlcv"
SILVER_PREFIX = "silver"
METADATA_PREFIX = "processing_metadata"


def bronze_symbol_prefix(symbol: str) -> str:
    return f"{BRONZE_PREFIX}/symbol={params.symbol(symbol)}/"


def bronze_daily_key(symbol: str, day: dt.date) -> str:
    return f"{bronze_symbol_prefix(symbol)}date={day.isoformat()}.parquet"


def bronze_history_key(symbol: str) -> str:
    return f"{bronze_symbol_prefix(symbol)}data.parquet"


def parse_bronze_key(key: str) -> tuple[str, dt.date | None] | None:
    """``(symbol, date)`` of a daily file, ``(symbol, None)`` of a history file, else ``None``."""
    m = re.fullmatch(re.escape(BRONZE_PREFIX) + r"/symbol=([^/]+)/(?:date=(\d{4}-\d{2}-\d{2})|data)\.parquet", key)
    if not m:
        return None
    return m.group(1), dt.date.fromisoformat(m.group(2)) if m.group(2) else None


def manifest_key(year: int) -> str:
    return f"{MANIFEST_PREFIX}/sessions_{year:04d}.json"


def quarantine_key(day: dt.date, run_id: str) -> str:
    return f"{QUARANTINE_PREFIX}/date={day.isoformat()}/{params.run_id(run_id)}.parquet"


def suspect_key(day: dt.date, run_id: str) -> str:
    return f"{SUSPECT_PREFIX}/date={day.isoformat()}/{params.run_id(run_id)}.parquet"


def batch_prefix(day: dt.date) -> str:
    return f"{BATCH_PREFIX}/date={day.isoformat()}/"


def batch_key(day: dt.date, run_id: str) -> str:
    return f"{batch_prefix(day)}{params.run_id(run_id)}.parquet"


def change_key(run_id: str | None, unique: str) -> str:
    """A change object's key: the run that wrote it (``anon`` when none) and a unique suffix."""
    run = params.run_id(run_id) if run_id else "anon"
    return f"{CHANGES_PREFIX}/{run}-{params.run_id(unique)}.parquet"


def silver_prefix(n: int) -> str:
    return f"{SILVER_PREFIX}/silver_{params.interval(n)}d/"


def silver_key(n: int, year: int, month: int) -> str:
    return f"{silver_prefix(n)}year={year:04d}/month={month:02d}/data_{n}d_{year:04d}{month:02d}.parquet"


def checkpoint_key(n: int) -> str:
    return f"{METADATA_PREFIX}/silver_{params.interval(n)}d_checkpoint.json"
