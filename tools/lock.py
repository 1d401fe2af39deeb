"""Write ``constraints.txt``: the exact versions of condvest's runtime dependencies, as installed here.

    .venv/bin/python tools/lock.py            rewrite constraints.txt from this environment
    .venv/bin/python tools/lock.py --check    exit 1 when constraints.txt misses or mis-pins a dependency

The container image installs the project's wheel with ``pip install --constraint constraints.txt``, so it
gets the versions the test suite ran with. Only the runtime closure is pinned (the ``[project]``
dependencies and theirs, markers evaluated for Linux/CPython 3.11), not the test or bench extras.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "constraints.txt"
ENV = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux", "platform_system": "Linux",
       "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "platform_machine": "x86_64"}  # fmt: skip


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "condvest") -> dict[str, str]:
    """name -> installed version of every distribution the project needs at run time."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a requirement whose marker held but that is not installed here: nothing to pin
        if _norm(name) != _norm(root):
            pins[_norm(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None:
                envs = [{**ENV, "extra": e} for e in (extras or {""})]
                if not any(req.marker.evaluate(env) for env in envs):
                    continue
            todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(pins.items()))


def render(pins: dict[str, str]) -> str:
    head = "# condvest's runtime dependencies as tested (tools/lock.py writes this file; --check verifies it)\n"
    return head + "".join(f"{n}=={v}\n" for n, v in pins.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    pins = closure()
    if args.check:
        have = TARGET.read_text() if TARGET.exists() else ""
        listed = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", have, flags=re.M))
        wrong = [f"{n}=={v} (listed: {listed.get(n)})" for n, v in pins.items() if listed.get(n) != v]
        if wrong:
            print(
                "constraints.txt is not this environment's (after a deliberate change, rerun tools/lock.py):\n  "
                + "\n  ".join(wrong),
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(render(pins))
    print(f"{TARGET.name}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
