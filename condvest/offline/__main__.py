"""Command line of the offline market.

python -m condvest.offline serve --port 8765 [--symbols N --seed S] [--api-key KEY] [--now ISO]
    [--plan unlimited|free|starter|developer] [--minute SECONDS]
    (default: the demo's market, its symbols, seed and splits as the last ``make demo`` recorded them)
python -m condvest.offline dms --lake ./lake --start 1962-01-02 --end 2025-10-31 [--lake-like]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import threading

from condvest.errors import CondvestError
from condvest.offline.dms import write_dms_export
from condvest.offline.market import SyntheticMarket
from condvest.offline.plans import PLANS
from condvest.offline.server import start_in_thread
from condvest.offline.world import world_for
from condvest.settings import Settings
from condvest.storage import open_store


def _market(args: argparse.Namespace) -> object:
    if args.lake_like:
        return SyntheticMarket.lake_like(args.symbols or 100, 7 if args.seed is None else args.seed)
    if args.command == "serve":
        settings = Settings.from_env()
        world = world_for(settings.home, settings.today(), args.symbols, args.seed)
        args.described = f"market: {world.describe()}"
        return world.market()
    return SyntheticMarket(args.symbols or 100, 7 if args.seed is None else args.seed)


def _serve(args: argparse.Namespace) -> int:
    now = dt.datetime.fromisoformat(args.now) if args.now else None
    handle = start_in_thread(
        _market(args),  # type: ignore[arg-type]
        args.host,
        args.port,
        args.api_key,
        now=now,
        plan=args.plan,
        minute=args.minute,
    )
    print(
        f"offline Polygon server at {handle.base_url} (api key {args.api_key!r}, plan {args.plan}); Ctrl-C stops it",
        flush=True,
    )
    if getattr(args, "described", None):
        print(args.described, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0


def _dms(args: argparse.Namespace) -> int:
    store = open_store(args.lake, Settings.from_env())
    keys = write_dms_export(
        store,
        _market(args),
        dt.date.fromisoformat(args.start),  # type: ignore[arg-type]
        dt.date.fromisoformat(args.end),
        n_files=args.files,
        quirks=not args.no_quirks,
        progress=True,
    )
    print("\n".join(keys))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m condvest.offline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "dms"):
        p = sub.add_parser(name)
        p.add_argument("--symbols", type=int, help="serve: the demo's (50); dms: 100")
        p.add_argument("--seed", type=int, help="default 7")
        p.add_argument("--lake-like", action="store_true", help="calibrate listings to ~10.8M rows (5,350 symbols)")
    serve = sub.choices["serve"]
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--api-key", default="test-key")
    serve.add_argument("--now", help="fix the server clock, e.g. 2025-10-20T15:00:00+00:00")
    serve.add_argument("--plan", default="unlimited", choices=sorted(PLANS), help="the vendor plan to play")
    serve.add_argument("--minute", type=float, default=60.0, help="seconds of the plan's rate window")
    dms = sub.choices["dms"]
    dms.add_argument("--lake", required=True, help="lake root: a folder or s3://bucket/prefix")
    dms.add_argument("--start", default="1962-01-02")
    dms.add_argument("--end", default="2025-10-31")
    dms.add_argument("--files", type=int, default=8)
    dms.add_argument("--no-quirks", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return _serve(args) if args.command == "serve" else _dms(args)
    except CondvestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
