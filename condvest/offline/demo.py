"""``make demo``: the whole path on a local lake, offline, against the synthetic market.

1. a local Polygon-compatible server serves a deterministic market; the lake (``./lake``) gets an older
   history as a legacy AWS DMS export (``public/raw_ohlcv/LOAD*.parquet``), and Postgres and the lake get a
   deployment of the previous pipeline (its tables with the backfill window's bars, a few of its bronze
   files, an old checkpoint: ``condvest.offline.previous``);
2. 04_retention ``mode=adopt`` converts those tables in place;
3. 03_migrate moves that export into the bronze layout (validated; sources kept);
4. 01_fetch backfills the years between the export and the last 30 sessions, as it would have run
   back then (``as_of`` a few weeks ago), so Postgres holds a window that has since aged (the rows the
   previous pipeline held are updated in place);
5. the daily pipeline (01_fetch with smart backfill, compaction and 02_resample) brings it up to today;
   two symbols split inside its window (a 2-for-1 and a 1-for-10 reverse split), so 01_fetch re-fetches
   their whole history on today's price basis (a rebase) and 02_resample recomputes their silver bars;
6. 04_retention deploys the policy and the weekly pipeline archives the rows that aged out;
7. 05_monitoring charts it all (its splits section lists the rebased symbols and their basis date).

Every step is a runner run: executed notebooks and their html land under ``./runs``. The embedded
Postgres cluster lives under ``./.condvest`` and is stopped at the end (notebooks restart it on demand).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from condvest.offline.market import SyntheticMarket
from condvest.offline.previous import seed_previous_deployment
from condvest.offline.sandbox import offline_world
from condvest.offline.world import World, plan_dates
from condvest.postgres import EmbeddedCluster, connect
from condvest.settings import Secret, Settings
from condvest.storage import LocalStore


def _steps(today: dt.date) -> list[tuple[str, list[str]]]:
    _, history_start, backfill_end = plan_dates(today)
    return [
        ("adopt the previous pipeline's tables", ["run", "04_retention", "-p", "mode", "adopt"]),
        ("migrate the legacy DMS export", ["run", "03_migrate"]),
        (
            "backfill history as of " + backfill_end.isoformat(),
            [
                "run",
                "01_fetch",
                "-p",
                "start",
                history_start.isoformat(),
                "-p",
                "end",
                backfill_end.isoformat(),
                "-p",
                "as_of",
                backfill_end.isoformat(),
                "-p",
                "skip_market_check",
                "True",
            ],
        ),
        ("daily pipeline (fetch, compaction, resample)", ["pipeline", "daily"]),
        ("deploy the retention policy", ["run", "04_retention", "-p", "mode", "deploy"]),
        ("weekly pipeline (archive, then Postgres compared with bronze)", ["pipeline", "weekly"]),
        ("monitoring", ["run", "05_monitoring"]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m condvest.offline.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--symbols", type=int, default=50, help="symbols in the synthetic market (default 50)")
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="where ./lake, ./runs and ./.condvest go")
    opts = ap.parse_args(argv)
    root = opts.root.resolve()
    today = Settings.from_env().today()
    runs = root / "runs"
    t0 = time.monotonic()
    print(f"condvest demo: offline market of {opts.symbols} symbols, today = {today}, lake = {root / 'lake'}")
    dms_end = plan_dates(today)[0]
    world = World.plan(today, opts.symbols)
    world.save(root / ".condvest")  # make lab, make shell and the offline server serve this market
    splits = list(world.splits)
    for sp in splits:
        print(f"  the market splits {sp.symbol} {sp.split_from:g}:{sp.split_to:g} on {sp.execution_date}")
    with offline_world(
        root, n_symbols=opts.symbols, as_of=today, dms_end=dms_end, pg_home=root / ".condvest", splits=splits
    ) as env:
        env = {**os.environ, **env, "CONDVEST_RUNS_URI": str(runs), "CONDVEST_AS_OF": today.isoformat()}
        _, history_start, backfill_end = plan_dates(today)
        with connect(Settings(), dsn=Secret(env["CONDVEST_PG_DSN"]), autocommit=True) as conn:
            seeded = seed_previous_deployment(
                conn,
                LocalStore(root / "lake"),
                SyntheticMarket(n_symbols=opts.symbols, seed=7, splits=splits),
                history_start,
                backfill_end,
            )
        if seeded:
            print("\n== a deployment of the previous pipeline: " + ", ".join(f"{k} {v}" for k, v in seeded.items()))
        for title, args in _steps(today):
            print(f"\n== {title}: python -m runner {' '.join(args)}", flush=True)
            code = subprocess.run(
                [sys.executable, "-m", "runner", *args, "--no-progress"], env=env, cwd=root
            ).returncode
            if code != 0:
                print(
                    f"\ndemo stopped: step '{title}' failed (exit {code}); its notebook is under {runs}",
                    file=sys.stderr,
                )
                return code
    EmbeddedCluster(root / ".condvest").stop()
    print(f"\ndemo finished in {time.monotonic() - t0:.0f} s.")
    print(f"  every run, newest first:     {runs}/index.html  (python -m runner list)")
    print(f"  executed notebooks and html: {runs}/<run id>/  (run index: {runs}/index/)")
    print(f"  the lake:                    {root / 'lake'}")
    print("  explore:                     make lab   (JupyterLab on lab/, a copy of notebooks/; this lake and market)")
    print("  the runner in this world:    make shell (a terminal: python -m runner run 06_explore -p symbols BQFG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
