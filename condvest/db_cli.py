"""``python -m condvest db start|stop|status``: the embedded PostgreSQL cluster under ``<CONDVEST_HOME>/pg``.

``start`` creates the cluster on first use and says that it is left running; ``stop`` stops it (nothing
to do when it is not running); ``status`` prints whether it runs, where and on which port (never the
password). With ``CONDVEST_PG_DSN`` or RDS settings there is no embedded cluster to manage: the command
says so and exits 0 (``status``) or 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from condvest.errors import ClusterError, ConfigError
from condvest.postgres import EmbeddedCluster
from condvest.settings import Settings

STOP_COMMAND = "python -m condvest db stop"


def _embedded(settings: Settings) -> EmbeddedCluster | None:
    """The embedded cluster when the settings use one and it was created here, else ``None`` (nothing created)."""
    if settings.pg_dsn is not None or settings.rds_endpoint or settings.rds_secret_arn:
        return None
    if not Path(settings.home).is_dir():
        return None
    cluster = EmbeddedCluster(settings.home)
    return cluster if cluster.dir.is_dir() else None


def embedded_pid_file(settings: Settings) -> bool:
    """Whether the embedded cluster's server has a pid file (it runs, or died without cleaning up): a cheap
    check, before a command that may start it."""
    cluster = _embedded(settings)
    return cluster is not None and (cluster.data / "postmaster.pid").exists()


def left_running_note(settings: Settings, was_running: bool) -> str | None:
    """One line for stderr when a command started the embedded PostgreSQL and left it running (a notebook
    starts it on demand and never stops it: the next run reuses it), naming the stop command; else ``None``."""
    cluster = _embedded(settings)
    if was_running or cluster is None or not cluster.running():
        return None
    return (
        f"note: the embedded PostgreSQL this run started is still running on 127.0.0.1:{cluster.port()} "
        f"(data {cluster.data}); stop it with: {STOP_COMMAND}"
    )


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
                f"it stays running: stop it with {STOP_COMMAND}"
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
