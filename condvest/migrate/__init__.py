"""03_migrate: the legacy AWS DMS export into per-symbol bronze history, validated before any deletion.

    run_migration(settings, MigrateParams(source_prefix="public/raw_ohlcv", ...)) -> MigrationReport
    cleanup_sources(settings, MigrateParams(delete_source=True))   (only after a passing validation)
    readable_export(store)   the export files readers still need (condvest.dms's, re-exported here)

Modules: ``params`` (the parameters, checked once: ``MigrateParams.check() -> CheckedMigrate``), ``read`` (the
export, explicitly typed), ``write`` (per-symbol histories), ``validate``
(counts, first/last session, checksums), ``state`` (resumable progress and the kept report),
``cleanup`` (the guarded delete/backup), ``run`` (the run).
"""

from condvest.dms import readable_export
from condvest.migrate.params import CheckedMigrate, MigrateParams
from condvest.migrate.run import MigrationReport, cleanup_sources, run_migration

__all__ = ["CheckedMigrate", "MigrateParams", "MigrationReport", "cleanup_sources", "readable_export", "run_migration"]
