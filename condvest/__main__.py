"""``python -m condvest COMMAND``: the package's own commands (``db``: the embedded PostgreSQL cluster).

Each command lives in its own module and registers itself with ``add_parser(sub)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from condvest import db_cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m condvest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
