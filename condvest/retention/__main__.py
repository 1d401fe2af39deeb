"""Command line for the retention policy (what ``sql/deploy_retention_policy.sh`` runs).

    python -m condvest.retention deploy  [--target local|rds|env] [--retention "3 years 1 month"] [--as-of D]
    python -m condvest.retention dry-run [...]
    python -m condvest.retention archive [...] [--lock-timeout 5s] [--method auto|rows]
    python -m condvest.retention adopt   [...]   convert the previous pipeline's tables in place (dry-run first)

``--target local`` uses ``CONDVEST_PG_DSN`` or else the embedded cluster, never RDS; ``--target rds`` uses
``RDS_SECRET_ARN`` or ``RDS_ENDPOINT``/``RDS_USERNAME``/``RDS_PASSWORD``/``RDS_DB_NAME``; ``env`` (default)
resolves as every stage does. Output names the target but never a password. Exit status: 0 on success
(also when an archive run is skipped because another holds the lock), 1 on a failure, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from condvest import retention
from condvest.errors import CondvestError, ConfigError
from condvest.postgres import connect
from condvest.settings import Settings

log = logging.getLogger(__name__)


def _settings(target: str) -> Settings:
    settings = Settings.from_env()
    if target == "local":
        return settings.with_(rds_secret_arn=None, rds_endpoint=None)
    if target == "rds":
        if not (settings.rds_secret_arn or settings.rds_endpoint):
            raise ConfigError(
                "rds mode needs RDS_SECRET_ARN or RDS_ENDPOINT/RDS_USERNAME/RDS_PASSWORD", variable="RDS_ENDPOINT"
            )
        return settings.with_(pg_dsn=None)
    return settings


def _emit(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m condvest.retention", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=retention.MODES)
    parser.add_argument("--target", choices=("env", "local", "rds"), default="env")
    parser.add_argument("--retention", default=None, help='e.g. "3 years 1 month" (default: CONDVEST_RETENTION)')
    parser.add_argument("--as-of", default=None, help="the run's today, YYYY-MM-DD (default: today in New York)")
    parser.add_argument("--lock-timeout", default="5s")
    parser.add_argument("--method", choices=retention.METHODS, default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = _settings(args.target)
        run = retention.plan(
            settings, retention.RetentionParams(args.mode, args.retention, args.as_of, args.lock_timeout, args.method)
        )
        _emit(f"target: {settings.describe()['postgres']}")
        _emit(run.to_frame().to_string())
        with connect(settings, autocommit=True) as conn:
            outcome = retention.execute(conn, run)
            _emit(outcome.to_frame().to_string(index=args.mode != "dry-run" or outcome.adoption is not None))
            if args.mode == "deploy":
                _emit("would be archived now:")
                _emit(retention.dry_run(conn, run.cutoff).to_string(index=False))
    except CondvestError as exc:
        log.error("retention_failed mode=%s error=%r", args.mode, str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
