"""``python -m condvest db start|stop|status``: the embedded PostgreSQL cluster under ``<CONDVEST_HOME>/pg``.

``start`` creates the cluster on first use and says that it is left running; ``stop`` stops it (nothing
to do when it is not running); ``status`` prints whether it runs, where and on which port (never the
password). With ``CONDVEST_PG_DSN`` or RDS settings there is no embedded cluster to manage: the command
says so and exits 0 (``status``) or 2.
"""

from __future__ import annotations

import argparse
import sys

from condvest.errors import ClusterError, ConfigError
from condvest.postgres import EmbeddedCluster
from condvest.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``db`` on a subparsers object (the ``python -m condvest`` dispatcher)."""
    p = sub.add_parser("db", help="start, stop or show the embedded PostgreSQL cluster", description=__doc__)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.pg_dsn is not None or settings.rds_endpoint or settings.rds_secret_arn:
        print("postgres: configured (CONDVEST_PG_DSN or RDS settings); no embedded cluster to manage")
        return 0 if args.action == "status" else 2
    cluster = EmbeddedCluster(settings.home)
    try:
        if args.action == "start":
            was_running = cluster.running()
            cluster.start()
            state = "already running" if was_running else "started"
            print(
                f"embedded postgres {state} on 127.0.0.1:{cluster.port()} (data {cluster.data}); "
                "it stays running: stop it with `python -m condvest db stop`"
            )
        elif args.action == "stop":
            if not cluster.running():
                print(f"embedded postgres not running (data {cluster.data})")
            else:
                cluster.stop()
                print(f"embedded postgres stopped (data {cluster.data})")
        else:
            if not cluster.exists():
                print(f"embedded postgres: not created yet (would live in {cluster.data})")
            elif cluster.running():
                print(f"embedded postgres: running on 127.0.0.1:{cluster.port()} (data {cluster.data})")
            else:
                print(f"embedded postgres: stopped (data {cluster.data}); start it with `python -m condvest db start`")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
