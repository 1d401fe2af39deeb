"""Where the project is: its root folder and the ``.env`` file there.

Relative locations in the settings (``./lake``, ``./runs``, ``.condvest``) mean "under the project root",
never "under the current directory": a JupyterLab kernel runs in ``notebooks/``, a runner run in the
root, and both must see the same lake. The root is the nearest folder at or above the starting folder
that holds ``pyproject.toml`` or a ``.condvest/`` marker; failing that, the parent of an absolute
``CONDVEST_HOME``; failing that, the starting folder itself.

``.env`` at the root holds ``NAME=value`` lines (``export`` prefixes, quotes and ``#`` comments allowed).
Its values never override real environment variables, and are never logged (only their names are).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

DOTENV = ".env"
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def find_root(start: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The project root seen from ``start`` (default: the current directory); see the module docstring."""
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() or (p / ".condvest").is_dir():
            return p
    e = os.environ if env is None else env
    home = e.get("CONDVEST_HOME")
    if home and Path(home).is_absolute():
        return Path(home).parent
    return here


def resolve_location(value: str, root: Path) -> str:
    """A local location made absolute against ``root``; URIs (``s3://…``) and absolute paths unchanged."""
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def parse_dotenv(text: str) -> dict[str, str]:
    """The ``NAME=value`` pairs of a ``.env`` text (blank lines and ``#`` comments skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        name, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[name] = value
    return out


def environment(root: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: the process environment) completed by ``<root>/.env``; real variables win."""
    base = dict(os.environ if env is None else env)
    path = root / DOTENV
    if not path.is_file():
        return base
    extra = {k: v for k, v in parse_dotenv(path.read_text()).items() if k not in base}
    if extra:
        log.info("dotenv=%s variables=%s", path, ",".join(sorted(extra)))
    return {**extra, **base}
