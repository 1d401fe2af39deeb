"""The command line (python -m runner): run notebooks and pipelines, read the run index, bundle a run folder;
the cloud commands come from runner.cloud.cli. The only place errors become exit codes (listed in ``EXAMPLES``).
What a user reads is ``DESCRIPTION`` and ``EXAMPLES`` (python -m runner --help).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from condvest.db_cli import embedded_pid_file, left_running_note
from condvest.errors import BusyError, ConfigError, ParameterError, StorageError
from condvest.runs import read_index, read_records
from condvest.secret_values import secret_values
from condvest.settings import Settings
from condvest.storage import open_store
from runner.browse import bundle_run, unique_run
from runner.cloud import cli as cloud_cli
from runner.execute import DEFAULT_CELL_TIMEOUT, RunOptions, run_notebook
from runner.listing import STATUSES, pipelines_text, runs_json, runs_table, select_runs, show_run
from runner.notebooks import find_project_root, parse_value
from runner.pipelines import run_pipeline
from runner.provenance import code_version
from runner.scrub import Scrubber, ScrubFilter
from runner.sharding import run_pipeline_sharded, shard_parameters

#: the exit code of a run stopped by a busy lake (another run holds the lake lock), as ``runner job``'s
EXIT_BUSY = 75

DESCRIPTION = """Run the workbench's notebooks headlessly and read what they did.

Each run executes a notebook (notebooks/01_fetch ... 06_explore, or a path) with papermill into a run
folder under runs/ (or CONDVEST_RUNS_URI): the executed notebook, its html page and the charts as PNG,
plus one record in the run index. runs/index.html lists every run, newest first."""

EXAMPLES = """examples:
  python -m runner run 01_fetch                        fetch the latest session (and the missing ones)
  python -m runner run 01_fetch -p date 2025-10-17     fetch one session
  python -m runner run 02_resample -p intervals 3,5,8  resample into 3-, 5- and 8-session bars
  python -m runner pipeline daily                      01_fetch, then 02_resample
  python -m runner list --status failed --since 3d     the failed runs of the last three days
  python -m runner show 20261207T0619                  one run (a unique start of its id is enough)
  python -m runner bundle 20261207T0619 --out /tmp     its folder, readable offline on its own
  python -m runner run --help                          a command's own options

exit codes:
  0    every run succeeded
  1    a notebook cell failed (one line names the notebook, the cell and the line that raised)
  2    refused before anything ran, nothing recorded: an unknown notebook or pipeline, a parameter the
       notebook does not declare, a secret-looking parameter, a value its stage refuses (-p date 2026-02-30),
       or an invalid setting
  3    the runs location could not be read or written
  75   busy: another run holds the lake lock (try again later; python -m runner list shows it)
  130  interrupted (Ctrl-C; the run is recorded as failed)"""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--runs-dir",
        metavar="URI",
        help="runs location: a folder or s3://bucket/prefix (default: CONDVEST_RUNS_URI or ./runs)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log the runner's steps (key=value) to stderr")

    execution = argparse.ArgumentParser(add_help=False, parents=[common])
    execution.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter (typed like papermill's -p: True/False/None, int, float, str)",
    )
    execution.add_argument("--run-id", metavar="ID", help="the run id (default: <UTC time>-<name>-<random>)")
    execution.add_argument(
        "--cwd",
        metavar="DIR",
        type=Path,
        help="working directory of the notebooks (default: the project root above cwd)",
    )
    execution.add_argument(
        "--shard",
        metavar="I/N",
        help="one part of a sharded run: I/N (0-based), array/N (I from AWS_BATCH_JOB_ARRAY_INDEX) or commit/N",
    )
    execution.add_argument("--shard-group", metavar="ID", help="the id a sharded run's parts and commit share")
    execution.add_argument("--log-output", action="store_true", help="also log cell outputs to stderr (scrubbed)")
    execution.add_argument("--no-progress", action="store_true", help="no progress bar")
    execution.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_CELL_TIMEOUT,
        help=f"per-cell execution timeout (default {DEFAULT_CELL_TIMEOUT:.0f}; 0: none)",
    )

    parser = argparse.ArgumentParser(
        prog="python -m runner",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=_version())
    # no option of any command may be abbreviated: `submit --shard 2` must never be taken for `--shards 2`
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=functools.partial(argparse.ArgumentParser, allow_abbrev=False)
    )
    run = sub.add_parser("run", parents=[execution], help="run one notebook")
    run.add_argument("notebook", help="a path or a short name such as 01_fetch (notebooks/01_fetch.ipynb)")
    pipe = sub.add_parser(
        "pipeline",
        parents=[execution],
        help="run a named pipeline's stages in order",
        epilog=pipelines_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pipe.add_argument("name", help="pipeline name (listed below)")
    pipe.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="run each stage as N shard processes at once, then its commit (stages that declare shard)",
    )
    ls = sub.add_parser("list", parents=[common], help="runs from the run index, newest first")
    ls.add_argument("-n", "--limit", type=int, default=20, help="how many runs (default 20)")
    ls.add_argument("--notebook", metavar="NAME", help="only this notebook, e.g. 05_monitoring")
    ls.add_argument("--status", choices=STATUSES, help="only runs with this status")
    ls.add_argument("--since", metavar="WHEN", help="only runs started since a date, a time, or a span (3d, 12h)")
    ls.add_argument("--json", action="store_true", help="print the runs as a JSON array")
    show = sub.add_parser("show", parents=[common], help="one run's summary and where its files are")
    show.add_argument("run", help="a run id (or a pipeline run id: all its stages), or a unique start of one")
    bundle = sub.add_parser(
        "bundle",
        parents=[common],
        help="copy a run's folder with plotly.js beside its pages, to read offline on its own",
    )
    bundle.add_argument("run", help="a run id or a pipeline run id, or a unique start of one")
    bundle.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="where to copy it (default: .)")
    cloud_cli.add_commands(sub, common, execution)
    return parser


def _version() -> str:
    return f"condvest runner, code {code_version(find_project_root())}"


def _configure_logging(verbose: bool, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(ScrubFilter(Scrubber(secrets)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reading = args.command not in ("run", "pipeline", "job")  # these run no notebook here
    _configure_logging(args.verbose, settings.secrets() if reading else secret_values(settings))
    if getattr(args, "log_output", False):
        logging.getLogger("papermill").setLevel(logging.INFO)
    runs_here = args.command in ("run", "pipeline")
    pg_was_running = runs_here and embedded_pid_file(settings)
    try:
        code = _dispatch(args, settings)
        note = left_running_note(settings, pg_was_running) if runs_here else None
        if note:
            print(note, file=sys.stderr)
        return code
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: runs location: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: the run was recorded as failed", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in cloud_cli.COMMANDS:
        return cloud_cli.dispatch(args, settings)
    if args.command == "list":
        df = select_runs(
            read_index(settings, runs_uri=args.runs_dir), notebook=args.notebook, status=args.status, since=args.since
        )
        print(runs_json(df.head(args.limit)) if args.json else runs_table(df, limit=args.limit))
        return 0
    if args.command == "show":
        df = read_index(settings, runs_uri=args.runs_dir)
        print(show_run(df, unique_run([*df["run_id"], *df["pipeline_run_id"]], args.run)))
        return 0
    if args.command == "bundle":
        store = open_store(args.runs_dir or settings.runs_uri, settings)
        run = unique_run(
            [k for r in read_records(store) for k in (r.get("run_id"), r.get("pipeline_run_id"))], args.run
        )
        folder = bundle_run(store, run, args.out)
        print(f"{folder}  (open its .html pages in a browser: plotly.js is beside each page)")
        return 0
    params = {name: parse_value(value) for name, value in args.parameter}
    params.update(shard_parameters(args.shard, args.shard_group))
    options = RunOptions(
        runs_uri=args.runs_dir,
        run_id=args.run_id,
        root=args.cwd,
        progress_bar=not args.no_progress,
        log_output=args.log_output,
        execution_timeout=args.timeout if args.timeout > 0 else None,
    )
    if args.command == "run":
        results = [run_notebook(args.notebook, params, settings=settings, options=options)]
    elif args.shards is not None:
        if args.shard:
            raise ParameterError("give either --shards N (all of them) or --shard I/N (one)", parameter="shards")
        results = run_pipeline_sharded(args.name, params, args.shards, settings=settings, options=options)
    else:
        results = run_pipeline(args.name, params, settings=settings, options=options)
    for r in results:
        print(r.summary(), file=sys.stdout if r.ok else sys.stderr)
    if args.command == "pipeline":
        last = results[-1]
        where = f"stage {last.stage} ({last.notebook})" if last.stage else last.notebook
        state = "ok" if last.ok else f"failed at {where}"
        folder = f"{last.runs_uri.rstrip('/')}/{last.pipeline_run_id}"
        print(f"pipeline {args.name} {state}: {folder}", file=sys.stdout if last.ok else sys.stderr)
    if all(r.ok for r in results):
        return 0
    failed = [r for r in results if not r.ok]  # busy only when every failure is: a lake another run holds
    return EXIT_BUSY if all(r.error is not None and r.error.ename == BusyError.__name__ for r in failed) else 1


def exit_now(code: int) -> None:
    """End the process with ``code`` once its output is flushed, without the interpreter's teardown of every
    imported module (papermill, nbconvert, jupyter_client, zmq, ...: a noticeable share of a short command; the
    figure is in BENCHMARKS.md). By then every run has released what it held (kernels, the browser, temporary
    folders, the lake lock in the kernel) and the run index is written; no thread of ours is left working."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
