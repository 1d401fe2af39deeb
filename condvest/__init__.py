"""Condvest workbench: the package behind the notebooks. Importing it has no side effects.

The public API by stage (loaded lazily on first use, so ``import condvest`` stays cheap):

    settings    Settings, Retention, HttpLimits, Secret
    01_fetch    run_fetch, FetchParams, FetchReport                       (condvest.fetch)
    02_resample run_resample, ResampleParams, compact_bronze, checkpoint_table   (condvest.resample)
    03_migrate  run_migration, MigrateParams, cleanup_sources, MigrationReport  (condvest.migrate)
    04_retention run_retention, RetentionParams, deploy_retention, dry_run_retention, archive_old_bars,
                read_retention_views                                       (condvest.retention)
    05_monitoring collect_monitoring, MonitoringParams, MonitoringSnapshot  (condvest.monitoring)

Every stage takes a frozen params object and returns a result with ``summary()``, ``to_frame()`` and
``raise_for_status()``.
    storage     open_store, Store; Postgres: connect, EmbeddedCluster; errors: CondvestError and its tree
"""

from importlib import import_module
from typing import Any

from condvest.errors import CondvestError
from condvest.settings import HttpLimits, Retention, Secret, Settings

_LAZY = {
    "run_fetch": ("fetch", "run_fetch"),
    "FetchParams": ("fetch", "FetchParams"),
    "FetchReport": ("fetch", "FetchReport"),
    "run_resample": ("resample", "run_resample"),
    "checkpoint_table": ("resample", "checkpoint_table"),
    "compact_bronze": ("resample", "compact_bronze"),
    "ResampleParams": ("resample", "ResampleParams"),
    "MigrateParams": ("migrate", "MigrateParams"),
    "RetentionParams": ("retention", "RetentionParams"),
    "run_retention": ("retention", "run_retention"),
    "MonitoringParams": ("monitoring", "MonitoringParams"),
    "run_migration": ("migrate", "run_migration"),
    "cleanup_sources": ("migrate", "cleanup_sources"),
    "MigrationReport": ("migrate", "MigrationReport"),
    "deploy_retention": ("retention", "deploy"),
    "dry_run_retention": ("retention", "dry_run"),
    "archive_old_bars": ("retention", "archive"),
    "read_retention_views": ("retention", "read_views"),
    "collect_monitoring": ("monitoring", "collect"),
    "MonitoringSnapshot": ("monitoring", "MonitoringSnapshot"),
    "open_store": ("storage", "open_store"),
    "Store": ("storage", "Store"),
    "connect": ("postgres", "connect"),
    "EmbeddedCluster": ("postgres", "EmbeddedCluster"),
}

__all__ = ["CondvestError", "HttpLimits", "Retention", "Secret", "Settings", *sorted(_LAZY)]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'condvest' has no attribute {name!r}")
    module, attr = _LAZY[name]
    return getattr(import_module(f"condvest.{module}"), attr)
