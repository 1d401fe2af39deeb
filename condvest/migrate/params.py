"""03_migrate's parameters, checked once (pure, no I/O): ``MigrateParams(...).check() -> CheckedMigrate`` or
``ParameterError`` naming the parameter."""

from __future__ import annotations

from dataclasses import dataclass

from condvest import params
from condvest.errors import ParameterError
from condvest.lake import DMS_PREFIX
from condvest.migrate.read import check_source_prefix

__all__ = ["CheckedMigrate", "MigrateParams"]


@dataclass(frozen=True)
class MigrateParams:
    """03_migrate's parameters: where the export lives, a dry run, and the optional cleanup afterwards
    (``delete_source`` or ``backup_source``, each only when a passing validation matches the export)."""

    source_prefix: str = DMS_PREFIX
    dry_run: bool = False
    delete_source: bool = False
    backup_source: bool = False

    def check(self) -> CheckedMigrate:
        """Every parameter checked (before anything is written); the source prefix without a trailing slash."""
        dry_run, delete, backup = (
            params.flag(getattr(self, n), n) for n in ("dry_run", "delete_source", "backup_source")
        )
        if delete and backup:
            raise ParameterError("choose delete_source or backup_source, not both", parameter="backup_source")
        return CheckedMigrate(check_source_prefix(self.source_prefix), dry_run, delete, backup)


@dataclass(frozen=True)
class CheckedMigrate:
    """``MigrateParams`` checked: a plain key prefix outside the lake's own layers, at most one cleanup."""

    source_prefix: str
    dry_run: bool = False
    delete_source: bool = False
    backup_source: bool = False
