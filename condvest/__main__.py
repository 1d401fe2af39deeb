"""The package's command line: ``python -m condvest <command> ...``; settings come from the environment.

    python -m condvest lock status [--name resample]            the holder record; is its lease live?
    python -m condvest lock clear [--name resample] [--force]   remove the lock (a live lease needs --force)
    python -m condvest db start|stop|status                     the embedded PostgreSQL cluster

Exit codes: 0 done; 1 refused (``lock clear`` of a live lease without ``--force``); 2 usage error or an
invalid setting; 3 the lake could not be read or written.

New commands: add a subparser in ``_parser`` whose ``func`` takes ``(args, settings)`` and returns the exit
code; ``main`` does the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from condvest import db_cli
from condvest.errors import BusyError, ConfigError, ParameterError, StorageError
from condvest.lake_lock import LOCK_NAMES, clear_lock, lock_key, lock_status
from condvest.settings import Settings
from condvest.storage import open_store

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_STORAGE = 0, 1, 2, 3


def _lock_status(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings=settings)
    key = lock_key(args.name)
    status = lock_status(store, args.name, settings.lock_lease_s)
    if status is None:
        print(f"lock {args.name}: free ({store.url(key)} does not exist)")
        return EXIT_OK
    rec, lease = status
    print(f"lock {args.name}: {store.url(key)}")
    print(json.dumps(rec, indent=2, sort_keys=True))
    print(f"lease: {lease.why}")
    return EXIT_OK


def _lock_clear(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings=settings)
    before = lock_status(store, args.name, settings.lock_lease_s)
    try:
        rec = clear_lock(store, args.name, force=args.force, lease_s=settings.lock_lease_s)
    except BusyError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if rec is None:
        print(f"lock {args.name}: already free")
        return EXIT_OK
    state = "live, forced" if before is not None and before[1].live else "expired"
    print(f"lock {args.name}: cleared ({state}); was held by {rec.get('holder', '?')} run {rec.get('run_id', '?')}")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m condvest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the steps (key=value) to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lock = commands.add_parser("lock", help="inspect or clear a lake lock (processing_metadata/_locks/)")
    lock_commands = lock.add_subparsers(dest="lock_command", required=True, metavar="ACTION")
    name = argparse.ArgumentParser(add_help=False)
    name.add_argument("--name", default="resample", choices=sorted(LOCK_NAMES), help="which lock (default: resample)")
    status = lock_commands.add_parser("status", parents=[name], help="print the holder record and its lease")
    status.set_defaults(func=_lock_status)
    clear = lock_commands.add_parser("clear", parents=[name], help="remove the lock (refuses a live lease)")
    clear.add_argument("--force", action="store_true", help="also remove a live lease (its holder must be gone)")
    clear.set_defaults(func=_lock_clear)

    db_cli.add_parser(commands)  # its handler reads the settings itself
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (argparse exits with 2 itself on a usage error)."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        if getattr(args, "handler", None) is not None:
            return int(args.handler(args))
        settings = Settings.from_env()
        return args.func(args, settings)
    except (ConfigError, ParameterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StorageError as exc:
        print(f"error: lake: {exc}", file=sys.stderr)
        return EXIT_STORAGE


if __name__ == "__main__":
    sys.exit(main())
