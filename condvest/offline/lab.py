"""``make lab``: JupyterLab on ``notebooks/`` in the same world as ``make demo`` and the runner.

    python -m condvest.offline.lab [--port 8888] [--no-browser] [--symbols 50] [-- JUPYTER ARGS...]

Before JupyterLab starts: when no database is configured (``CONDVEST_PG_DSN``, RDS settings) the
embedded PostgreSQL under ``.condvest/`` is started or reused; when no API key is configured the offline
market (the demo's: same symbols and seed) is served on 127.0.0.1 and its URL and a throwaway key are
exported; the lake, runs and home are exported as absolute paths under the project root, and
``CONDVEST_AS_OF`` as the real date, as the demo runs. Ctrl-C stops JupyterLab, the market, and the
cluster if this command started it (one it found running stays running, and it says so).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from condvest.offline.market import SyntheticMarket
from condvest.offline.server import serve_in_thread
from condvest.postgres import EmbeddedCluster
from condvest.project import environment, find_root
from condvest.settings import Settings

#: the demo's market (``python -m condvest.offline.demo``): 50 symbols, seed 7
DEMO_SYMBOLS = 50
DEMO_SEED = 7


def _say(message: str) -> None:
    print(f"condvest lab: {message}", flush=True)


@contextlib.contextmanager
def lab_services(
    root: Path, *, n_symbols: int = DEMO_SYMBOLS, seed: int = DEMO_SEED, env: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Start what the notebooks need and is not configured; yield the environment for JupyterLab (``env``,
    default the process environment, completed by the root's ``.env``).

    On exit the market stops, and the embedded cluster stops when it was started here."""
    env = environment(root, env)
    settings = Settings.from_env(env, root=root)
    env.update(
        CONDVEST_LAKE_URI=settings.lake_uri,
        CONDVEST_RUNS_URI=settings.runs_uri,
        CONDVEST_HOME=str(settings.home),
        CONDVEST_AS_OF=env.get("CONDVEST_AS_OF") or settings.today().isoformat(),
    )
    cluster = None
    if settings.pg_dsn is None and not (settings.rds_endpoint or settings.rds_secret_arn):
        candidate = EmbeddedCluster(settings.home)
        if candidate.running():
            _say(f"reusing the embedded PostgreSQL on port {candidate.port()} (it stays running)")
        else:
            candidate.start()
            cluster = candidate
            _say(f"started the embedded PostgreSQL on port {candidate.port()} (stopped when JupyterLab stops)")
    with contextlib.ExitStack() as stack:
        if settings.polygon_api_key is None and not settings.polygon_api_key_secret_arn:
            key = "offline-" + secrets.token_hex(8)
            server = stack.enter_context(serve_in_thread(SyntheticMarket(n_symbols, seed), api_key=key))
            env.update(POLYGON_BASE_URL=server.base_url, POLYGON_API_KEY=key)
            _say(f"offline market ({n_symbols} symbols) at {server.base_url} (stopped when JupyterLab stops)")
        try:
            yield env
        finally:
            if cluster is not None:
                cluster.stop()
                _say("stopped the embedded PostgreSQL it started")


def jupyter_command(
    root: Path, extra: Sequence[str] = (), *, port: int | None = None, browser: bool = True
) -> list[str]:
    """The JupyterLab command line: on ``notebooks/``, ``--allow-root`` only when run as root."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root / 'notebooks'}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    if port is not None:
        cmd.append(f"--port={port}")
    if not browser:
        cmd.append("--no-browser")
    return [*cmd, *extra]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        prog="python -m condvest.offline.lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--port", type=int, help="JupyterLab's port (default: Jupyter's, 8888 or the next free one)")
    ap.add_argument("--no-browser", action="store_true", help="do not open a browser")
    ap.add_argument("--symbols", type=int, default=DEMO_SYMBOLS, help="symbols of the offline market (the demo's)")
    opts = ap.parse_args(argv)
    # Ctrl-C and a plain kill both end in the clean-up below (even when started with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    root = find_root()
    with lab_services(root, n_symbols=opts.symbols) as env:
        cmd = jupyter_command(root, extra, port=opts.port, browser=not opts.no_browser)
        _say(f"JupyterLab on {root / 'notebooks'}; Ctrl-C stops it and what this command started")
        proc = subprocess.Popen(cmd, env=env, cwd=root / "notebooks")
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return 0


if __name__ == "__main__":
    sys.exit(main())
