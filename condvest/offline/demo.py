"""``make demo``: the whole path on a local lake, offline, against the synthetic market.

1. a local Polygon-compatible server serves a deterministic market; the lake (``./lake``) gets an older
   history as a legacy AWS DMS export (``public/raw_ohlcv/LOAD*.parquet``);
2. 03_migrate moves that export into the bronze layout (validated; sources kept);
3. 01_fetch backfills the years between the export and the last 30 sessions, as it would have run
   back then (``as_of`` a few weeks ago), so Postgres holds a window that has since aged;
4. the daily pipeline (01_fetch with smart backfill, compaction and 02_resample) brings it up to today;
5. 04_retention deploys the policy and the weekly pipeline archives the rows that aged out;
6. 05_monitoring charts it all.

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

from condvest.calendar import last_n_sessions, latest_complete_session, previous_session
from condvest.offline.sandbox import offline_world
from condvest.postgres import EmbeddedCluster
from condvest.settings import Settings


def _plan_dates(today: dt.date) -> tuple[dt.date, dt.date, dt.date]:
    """(last DMS session, backfill start, backfill end): the export, the backfill and the daily window abut."""
    backfill_end = last_n_sessions(latest_complete_session(today), 31)[0]  # just before the daily window
    history_start = Settings().retention.cutoff(backfill_end)
    return previous_session(history_start), history_start, backfill_end


def _steps(today: dt.date) -> list[tuple[str, list[str]]]:
    _, history_start, backfill_end = _plan_dates(today)
    return [
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
        ("weekly pipeline (archive)", ["pipeline", "weekly"]),
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
    dms_end = _plan_dates(today)[0]
    with offline_world(root, n_symbols=opts.symbols, as_of=today, dms_end=dms_end, pg_home=root / ".condvest") as env:
        env = {**os.environ, **env, "CONDVEST_RUNS_URI": str(runs), "CONDVEST_AS_OF": today.isoformat()}
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
    print(f"  executed notebooks and html: {runs}/<run id>/  (run index: {runs}/index.jsonl)")
    print(f"  the lake:                    {root / 'lake'}")
    print("  explore:                     make lab   (JupyterLab on notebooks/, this lake; 06_explore)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
