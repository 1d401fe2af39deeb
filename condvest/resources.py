"""Where the files shipped beside the code are: the SQL schema (``sql/``) and the notebooks (``notebooks/``).

In a checkout (and an editable install) they are the repository's top-level ``sql/`` and ``notebooks/``; a
wheel (``pip install .``, the container image) ships them as package data, ``condvest/_sql`` and
``condvest/_notebooks`` (see setup.py). The installed copy wins when both exist.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _packaged(name: str) -> Path | None:
    inside = _PACKAGE / name
    return inside if inside.is_dir() else None


#: the notebooks shipped inside an installed wheel (``None`` in a checkout, where ``notebooks/`` is used)
PACKAGED_NOTEBOOKS_DIR = _packaged("_notebooks")
#: the schema files ``NNN_*.sql`` and ``deploy_retention_policy.sh``
SQL_DIR = _packaged("_sql") or _PACKAGE.parent / "sql"
#: the stage notebooks ``01_fetch.ipynb`` ... ``05_monitoring.ipynb``
NOTEBOOKS_DIR = PACKAGED_NOTEBOOKS_DIR or _PACKAGE.parent / "notebooks"
