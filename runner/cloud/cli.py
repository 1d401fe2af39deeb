"""The runner's cloud commands, added to ``python -m runner``:

job NOTEBOOK|PIPELINE [-p NAME VALUE]...                      the container entrypoint (runner.cloud.job)
"""

from __future__ import annotations

import argparse

from condvest.settings import Settings
from runner.cloud.job import main_job
from runner.execute import RunOptions
from runner.notebooks import parse_value

COMMANDS = ("job",)


def add_commands(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser, execution: argparse.ArgumentParser
) -> None:
    """Add the cloud commands to the runner's sub-command parser."""
    job = sub.add_parser(
        "job",
        parents=[execution],
        help="run a notebook or pipeline as a job: exit code = outcome, alerts and report to SNS",
    )
    job.add_argument("target", metavar="NOTEBOOK|PIPELINE", help="a pipeline name (daily, weekly) or a notebook")


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        runs_uri=args.runs_dir,
        run_id=args.run_id,
        root=args.cwd,
        progress_bar=not args.no_progress,
        log_output=args.log_output,
        execution_timeout=args.timeout,
    )


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "job":
        params = {name: parse_value(value) for name, value in args.parameter}
        return main_job(args.target, params, settings=settings, options=run_options(args))
    raise AssertionError(f"not a cloud command: {args.command}")
