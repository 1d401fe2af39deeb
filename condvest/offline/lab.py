"""``make lab`` and ``make shell``: JupyterLab (or a terminal) in the same world as ``make demo`` and the runner.

    python -m condvest.offline.lab [--port 8888] [--no-browser] [--symbols N] [-- JUPYTER ARGS...]
    python -m condvest.offline.lab --sources [...]      deliberate edits of notebooks/ (saved without outputs)
    python -m condvest.offline.lab --shell [-- CMD...]  a terminal (``$SHELL``, or CMD) in the same world

Before JupyterLab (or the shell) starts: when no database is configured (``CONDVEST_PG_DSN``, RDS settings)
the embedded PostgreSQL under ``.condvest/`` is started or reused; when no API key is configured the demo's
offline market (its symbols, seed and splits, as the last ``make demo`` recorded them: ``condvest.offline.world``)
is served on 127.0.0.1 and its URL and a throwaway key are exported; the lake, runs and home are exported as
absolute paths under the project root, and ``CONDVEST_AS_OF`` as the real date, as the demo runs.

JupyterLab opens on ``lab/``, an untracked working copy of ``notebooks/`` (``condvest.offline.workcopy``):
whatever is explored and saved there, the runner and the pipelines still execute ``notebooks/``. ``--sources``
opens ``notebooks/`` itself, for a deliberate edit: saved without outputs (nbval's marked references kept).
Ctrl-C stops JupyterLab, the market, and the cluster if this command started it (one it found running stays
running, and it says so); in the shell, Ctrl-C belongs to the shell and ``exit`` leaves it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from condvest.offline.server import serve_in_thread
from condvest.offline.workcopy import refresh_working_copy
from condvest.offline.world import world_for
from condvest.postgres import EmbeddedCluster
from condvest.project import environment, find_root
from condvest.settings import Settings

#: JupyterLab's folder under the project root: the working copy of ``notebooks/`` (gitignored)
WORK_FOLDER = "lab"


def _say(message: str) -> None:
    print(f"condvest lab: {message}", flush=True)


@contextlib.contextmanager
def lab_services(
    root: Path, *, n_symbols: int | None = None, seed: int | None = None, env: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Start what the notebooks need and is not configured; yield the environment for JupyterLab (``env``,
    default the process environment, completed by the root's ``.env``). The market is the demo's world
    (``world_for``: the recorded one, or the one planned today; ``n_symbols``/``seed`` ask for another).

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
            _say(f"started the embedded PostgreSQL on port {candidate.port()} (stopped when this command stops)")
    with contextlib.ExitStack() as stack:
        if settings.polygon_api_key is None and not settings.polygon_api_key_secret_arn:
            key = "offline-" + secrets.token_hex(8)
            world = world_for(settings.home, dt.date.fromisoformat(env["CONDVEST_AS_OF"]), n_symbols, seed)
            server = stack.enter_context(serve_in_thread(world.market(), api_key=key))
            env.update(POLYGON_BASE_URL=server.base_url, POLYGON_API_KEY=key)
            _say(f"offline market ({world.describe()}) at {server.base_url} (stopped with this command)")
        try:
            yield env
        finally:
            if cluster is not None:
                cluster.stop()
                _say("stopped the embedded PostgreSQL it started")


def jupyter_command(
    root: Path, extra: Sequence[str] = (), *, port: int | None = None, browser: bool = True, sources: bool = False
) -> list[str]:
    """The JupyterLab command line: on the working copy ``lab/`` (``sources``: on ``notebooks/``, saving without
    outputs), ``--allow-root`` only when run as root."""
    folder = root / ("notebooks" if sources else WORK_FOLDER)
    hook = "condvest.offline.workcopy.strip_for_source"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={folder}",
        f"--ContentsManager.pre_save_hook={hook}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    if port is not None:
        cmd.append(f"--port={port}")
    if not browser:
        cmd.append("--no-browser")
    return [*cmd, *extra]


def lab_folder(root: Path, *, sources: bool = False) -> tuple[Path, list[str]]:
    """JupyterLab's folder: ``notebooks/`` for ``sources``, else the working copy ``lab/`` refreshed from it
    (``refresh_working_copy``); with what the refresh did, one line a notebook."""
    if sources:
        return root / "notebooks", []
    folder = root / WORK_FOLDER
    return folder, refresh_working_copy(root / "notebooks", folder)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _shell(env: dict[str, str], command: Sequence[str], root: Path) -> int:
    """Run ``command`` (default: the user's shell) in the lab's environment; Ctrl-C goes to it, not to us."""
    env = {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}
    cmd = list(command) or [env.get("SHELL") or "/bin/bash"]
    _say(
        f"{cmd[0]} in the demo's world: lake {env['CONDVEST_LAKE_URI']}, runs {env['CONDVEST_RUNS_URI']}, "
        f"market {env.get('POLYGON_BASE_URL', 'the configured API')}, PostgreSQL of {env['CONDVEST_HOME']} unless "
        "configured; try `python -m runner run 01_fetch`; `exit` leaves it and stops what this command started"
    )
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # the shell's; a handler (not SIG_IGN) is not inherited
    try:
        return subprocess.run(cmd, env=env, cwd=root).returncode
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    ap.add_argument("--symbols", type=int, help="symbols of the offline market (default: the demo's)")
    ap.add_argument("--sources", action="store_true", help="open notebooks/ itself (saved without outputs)")
    ap.add_argument("--shell", action="store_true", help="a terminal (or the command after --) instead of JupyterLab")
    opts = ap.parse_args(argv)
    # Ctrl-C and a plain kill both end in the clean-up below (even when started with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    root = find_root()
    with lab_services(root, n_symbols=opts.symbols) as env:
        if opts.shell:
            return _shell(env, extra, root)
        folder, said = lab_folder(root, sources=opts.sources)
        for line in said:
            _say(line)
        cmd = jupyter_command(root, extra, port=opts.port, browser=not opts.no_browser, sources=opts.sources)
        what = (
            "the source notebooks (a deliberate edit: saved without outputs; review with git diff notebooks/)"
            if opts.sources
            else f"{WORK_FOLDER}/, your working copy of notebooks/ (the runner executes notebooks/, never this copy)"
        )
        _say(f"JupyterLab on {what}; Ctrl-C stops it and what this command started")
        proc = subprocess.Popen(cmd, env=env, cwd=folder)
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
