"""Finding notebooks and checking the parameters a run passes to them (before anything executes)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from condvest.errors import ParameterError
from condvest.resources import PACKAGED_NOTEBOOKS_DIR
from runner.scrub import Scrubber

#: parameter names that look like a credential: secrets come from the environment, never as parameters
SECRET_NAME = re.compile(r"(?i)(api_?key|apikey|passw(or)?d|secret|token|dsn|credential|private_?key)")


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``notebooks/`` and ``pyproject.toml``.

    Falls back to ``start`` itself, so that a notebook given by path still runs from the current directory.
    """
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "notebooks").is_dir() and (p / "pyproject.toml").is_file():
            return p
    return here


def resolve_notebook(ref: str | Path, root: Path) -> Path:
    """The notebook named by ``ref``: a path (relative to cwd), or a short name such as ``01_fetch``
    looked up in ``<root>/notebooks/``, then among the notebooks the package ships (an installed wheel, the
    container image). Raises ``ParameterError`` naming what was looked for."""
    p = Path(ref)
    name = p.name if p.suffix == ".ipynb" else p.name + ".ipynb"
    candidates = []
    if p.suffix == ".ipynb" or len(p.parts) > 1:
        candidates.append(p if p.is_absolute() else Path.cwd() / p)
    if len(p.parts) == 1:
        candidates.append(root / "notebooks" / name)
        if PACKAGED_NOTEBOOKS_DIR is not None:
            candidates.append(PACKAGED_NOTEBOOKS_DIR / name)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise ParameterError(f"no notebook {str(ref)!r} (looked for {looked})", parameter="notebook")


def parse_value(text: str) -> Any:
    """A command-line parameter value, typed as papermill's ``-p`` does: True/False/None, int, float, else str."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def check_parameters(
    parameters: Mapping[str, Any], secrets: Iterable[str], declared: Iterable[str] | None, notebook: str
) -> dict[str, Any]:
    """Reject secret-looking names, values that contain a secret, and (when ``declared`` is given)
    parameters the notebook does not declare. Returns the parameters as a plain dict."""
    secret_values = [s for s in secrets if s]
    known = None if declared is None else set(declared)
    for name, value in parameters.items():
        if not name.isidentifier():
            raise ParameterError(f"{name!r} is not a valid parameter name", parameter=name)
        if SECRET_NAME.search(name):
            raise ParameterError(
                "looks like a secret; secrets never travel as parameters (papermill writes every parameter "
                "into the executed notebook): set it in the environment or Secrets Manager",
                parameter=name,
            )
        if any(s in str(value) for s in secret_values):
            raise ParameterError(
                "its value contains a secret from the environment; refusing to record it", parameter=name
            )
        if isinstance(value, str) and Scrubber([]).text(value) != value:
            raise ParameterError(
                "its value carries a credential (apiKey=... or a URL password); pass it through "
                "the environment instead",
                parameter=name,
            )
        if known is not None and name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ParameterError(f"{notebook} does not declare it (declared: {listed})", parameter=name)
    return dict(parameters)
