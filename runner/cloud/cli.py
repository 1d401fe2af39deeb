"""The runner's cloud commands, added to ``python -m runner``:

    job NOTEBOOK|PIPELINE [-p NAME VALUE]...                   the container entrypoint (runner.cloud.job)
    submit NOTEBOOK|PIPELINE --backend batch|sagemaker [-p NAME VALUE]... [--shards N] [--dry-run]
    status RUN [--poll SECONDS] [--timeout SECONDS]            follow a submitted run; exit code = its outcome
    logs RUN [--shard I] [--follow]                            print a job's CloudWatch Logs stream
    rerun RUN --shard I [--queue NAME]                         re-submit one shard, then its commit
    cancel RUN                                                 cancel or terminate every job of the run
    schedule --dry-run|--apply                                 the daily and weekly EventBridge schedules

No option may be abbreviated (``--shard 2`` is never taken for ``--shards 2``).

Exit codes as ``run`` (0 ok, 1 failed, 2 refused, 3 runs location), plus ``job``'s 75 (busy) and 130
(interrupted or terminated), and ``status``'s 4 (still running at ``--timeout``); an AWS API error is 5.
"""

from __future__ import annotations

import argparse
import sys

from condvest.errors import ConfigError, ParameterError
from condvest.settings import Settings
from runner.cloud import operate
from runner.cloud import submit as submission
from runner.cloud.aws import error_text
from runner.cloud.job import main_job
from runner.execute import RunOptions
from runner.notebooks import parse_value
from runner.scrub import Scrubber
from runner.sharding import shard_parameters

COMMANDS = ("job", "submit", "status", "logs", "rerun", "cancel", "schedule")
EXIT_AWS = 5


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

    sm = sub.add_parser("submit", parents=[common], help="run a notebook or pipeline in AWS Batch or SageMaker")
    sm.add_argument("target", metavar="NOTEBOOK|PIPELINE")
    sm.add_argument("--backend", choices=submission.BACKENDS, default="batch")
    sm.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    sm.add_argument("--run-id", metavar="ID", help="the run id (default: <UTC time>-<target>-<random>)")
    sm.add_argument("--dry-run", action="store_true", help="print the exact API payloads as JSON; call nothing")
    sm.add_argument(
        "--shards",
        metavar="N|auto",
        help="split by symbol: per stage a Batch array job of N children, then a commit job that depends on it; "
        "auto: one child per BATCH_SIZE symbols of the lake",
    )

    st = sub.add_parser("status", parents=[common], help="follow a submitted run to its end; exit with its outcome")
    st.add_argument("run", metavar="RUN", help="the run id that submit printed")
    st.add_argument("--poll", type=float, default=30.0, metavar="SECONDS", help="seconds between polls (30)")
    st.add_argument("--timeout", type=float, metavar="SECONDS", help="give up (exit 4) after this long")

    lg = sub.add_parser("logs", parents=[common], help="print the CloudWatch Logs stream of a run's job")
    lg.add_argument("run", metavar="RUN")
    lg.add_argument("--shard", type=int, metavar="I", help="shard I's job (a sharded run)")
    lg.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    rr = sub.add_parser("rerun", parents=[common], help="re-submit one shard of a sharded run, then its commit")
    rr.add_argument("run", metavar="RUN")
    rr.add_argument("--shard", type=int, metavar="I", required=True, help="the shard to run again (0-based)")
    rr.add_argument(
        "--queue", metavar="NAME", help="submit to this queue (the on-demand one when Spot had no capacity)"
    )
    cn = sub.add_parser("cancel", parents=[common], help="cancel or terminate every job of a run")
    cn.add_argument("run", metavar="RUN")

    sc = sub.add_parser("schedule", parents=[common], help="the daily and weekly schedules (EventBridge Scheduler)")
    mode = sc.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="print the job definitions and schedules as JSON")
    mode.add_argument("--apply", action="store_true", help="create or update them (idempotent)")


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        runs_uri=args.runs_dir,
        run_id=args.run_id,
        root=args.cwd,
        progress_bar=not args.no_progress,
        log_output=args.log_output,
        execution_timeout=args.timeout,
    )


def _shards(value: str | None, settings: Settings) -> int | None:
    if value is None:
        return None
    if value == "auto":
        shards, why = submission.auto_shards(settings)
        print(f"--shards auto: {shards} shards ({why})", file=sys.stderr)
        return shards
    if not value.isdigit():
        raise ParameterError(f"--shards takes a number or auto, not {value!r}", parameter="shards")
    return int(value)


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "job":
        params = {name: parse_value(value) for name, value in args.parameter}
        params.update(shard_parameters(args.shard, args.shard_group))
        return main_job(args.target, params, settings=settings, options=run_options(args))
    if args.runs_dir:
        settings = settings.with_(runs_uri=args.runs_dir)
    try:
        if args.command == "submit":
            params = [(n, v) for n, v in args.parameter]
            shards = _shards(args.shards, settings)
            return submission.submit(
                args.target,
                params,
                args.backend,
                settings,
                dry_run=args.dry_run,
                run_id=args.run_id,
                shards=shards,
            )
        if args.command == "status":
            return operate.follow(args.run, settings, poll=args.poll, timeout=args.timeout)
        if args.command == "logs":
            return operate.logs(args.run, settings, shard=args.shard, follow_on=args.follow)
        if args.command == "rerun":
            return operate.rerun(args.run, args.shard, settings, queue=args.queue)
        if args.command == "cancel":
            return operate.cancel(args.run, settings)
        return submission.schedule(settings, apply=args.apply)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "boto3")):
            print(f"error: AWS: {Scrubber(settings.secrets()).text(error_text(exc))}", file=sys.stderr)
            return EXIT_AWS
        raise
