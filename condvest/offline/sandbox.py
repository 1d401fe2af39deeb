"""An offline world for a command: a Polygon-compatible server, a throwaway Postgres and a fresh lake.

    python -m condvest.offline.sandbox [--symbols 40] [--as-of 2025-10-17] [--no-dms] -- CMD [ARGS...]

Runs CMD with ``POLYGON_BASE_URL``, ``POLYGON_API_KEY``, ``CONDVEST_LAKE_URI``, ``CONDVEST_RUNS_URI``,
``CONDVEST_PG_DSN`` and ``CONDVEST_AS_OF`` pointing into the sandbox, then tears everything down and
exits with CMD's code. ``make test`` runs nbval inside it, so the notebooks run at their default
parameters against a deterministic market.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from condvest.calendar import previous_session
from condvest.offline import SyntheticMarket, serve_in_thread, write_dms_export
from condvest.offline.market import Split
from condvest.postgres import EmbeddedCluster
from condvest.storage import LocalStore

#: the pinned "today" of sandboxed runs: a Friday, so the default daily run has a session to fetch
DEFAULT_AS_OF = dt.date(2025, 10, 17)


def dms_history_end(as_of: dt.date, sessions_back: int = 60) -> dt.date:
    """The last session the demo/sandbox DMS export holds: a while before ``as_of``, so fetch fills the rest."""
    day = as_of
    for _ in range(sessions_back):
        day = previous_session(day)
    return day


@contextlib.contextmanager
def offline_world(
    root: Path,
    *,
    n_symbols: int = 40,
    seed: int = 7,
    as_of: dt.date | None = DEFAULT_AS_OF,
    dms: bool = True,
    dms_start: dt.date = dt.date(1962, 1, 2),
    dms_end: dt.date | None = None,
    pg_home: Path | None = None,
    pg_dsn: str | None = None,
    splits: Sequence[Split] = (),
) -> Iterator[dict[str, str]]:
    """Start the server (and Postgres unless ``pg_dsn`` or ``CONDVEST_PG_DSN`` is given); yield the environment.

    ``splits``: the market's splits (none by default). A cluster started here is destroyed on exit unless
    ``pg_home`` names where it should stay."""
    root.mkdir(parents=True, exist_ok=True)
    lake = root / "lake"
    market = SyntheticMarket(n_symbols=n_symbols, seed=seed, splits=splits)
    if dms and not any(LocalStore(lake).list("public/raw_ohlcv/")):
        end = dms_end or dms_history_end(as_of or dt.date.today())
        write_dms_export(LocalStore(lake), market, dms_start, end, n_files=4, quirks=True)
    api_key = "offline-" + secrets.token_hex(8)
    cluster = None
    env = {
        "CONDVEST_LAKE_URI": str(lake),
        "CONDVEST_RUNS_URI": str(root / "runs"),
        "POLYGON_API_KEY": api_key,
        "CONDVEST_HOME": str(root / ".condvest"),
    }
    if as_of is not None:
        env["CONDVEST_AS_OF"] = as_of.isoformat()
    if pg_dsn:
        env["CONDVEST_PG_DSN"] = pg_dsn
    elif not os.environ.get("CONDVEST_PG_DSN"):
        cluster = EmbeddedCluster(pg_home or root / ".condvest")
        env["CONDVEST_PG_DSN"] = cluster.start().reveal()
    try:
        with serve_in_thread(market, host="127.0.0.1", port=0, api_key=api_key) as server:
            env["POLYGON_BASE_URL"] = server.base_url
            yield env
    finally:
        if cluster is not None and pg_home is None:
            cluster.destroy()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    i = argv.index("--")
    ap = argparse.ArgumentParser(prog="python -m condvest.offline.sandbox")
    ap.add_argument("--symbols", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--as-of", default=DEFAULT_AS_OF.isoformat())
    ap.add_argument("--no-dms", action="store_true")
    opts = ap.parse_args(argv[:i])
    cmd = argv[i + 1 :]
    with tempfile.TemporaryDirectory(prefix="condvest-sandbox-") as tmp:
        os.chmod(tmp, 0o755)  # the postgres user must reach the embedded cluster's folder
        with offline_world(
            Path(tmp),
            n_symbols=opts.symbols,
            seed=opts.seed,
            as_of=dt.date.fromisoformat(opts.as_of),
            dms=not opts.no_dms,
        ) as env:
            return subprocess.run(cmd, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main())
