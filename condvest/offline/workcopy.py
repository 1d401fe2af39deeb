"""Exploring never changes what the runner executes: ``make lab`` opens JupyterLab on ``lab/``, an untracked
working copy of ``notebooks/``; a deliberate edit of a source notebook saves without outputs.

``refresh_working_copy(sources, copy)`` copies each source notebook that the copy lacks, and refreshes a copy
the researcher has not changed when its source changed; a changed copy is kept, and the new source is put
beside it as ``<name>.source.ipynb`` (said in the returned messages). ``lab/.sources.json`` remembers, per
notebook, the source's digest and the digest of the copy last written.

``strip_for_source(model, path, contents_manager)`` is a Jupyter ``ContentsManager.pre_save_hook``: a notebook
saved under a project's ``notebooks/`` keeps no output, execution count or widget state, except the outputs of
cells marked ``# NBVAL_CHECK_OUTPUT`` (nbval's references, recorded by ``tools/nbval_record.py``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["NBVAL_MARK", "STATE_FILE", "refresh_working_copy", "strip_for_source", "strip_outputs"]

STATE_FILE = ".sources.json"
NBVAL_MARK = "# NBVAL_CHECK_OUTPUT"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refresh_working_copy(sources: Path, copy: Path) -> list[str]:
    """Bring ``copy`` up to date with the notebooks of ``sources`` without overwriting a researcher's change;
    what was refreshed or kept, one message a notebook (nothing for a copy already current)."""
    copy.mkdir(parents=True, exist_ok=True)
    state_path = copy / STATE_FILE
    state: dict[str, dict[str, str]] = json.loads(state_path.read_text()) if state_path.is_file() else {}
    said: list[str] = []
    for src in sorted(sources.glob("*.ipynb")):
        dst, src_digest = copy / src.name, _digest(src)
        known = state.get(src.name)
        if not dst.exists():
            shutil.copyfile(src, dst)
            state[src.name] = {"source": src_digest, "copy": src_digest}
            if known is not None:
                said.append(f"{dst.name}: copied again from {src} (the copy was gone)")
            continue
        dst_digest = _digest(dst)
        if known is None:  # a copy that predates the record: the researcher's unless identical
            known = {"source": dst_digest if dst_digest == src_digest else "", "copy": dst_digest}
        if known["source"] == src_digest:
            state[src.name] = known
            continue
        if dst_digest == known["copy"] or dst_digest == src_digest:
            shutil.copyfile(src, dst)
            state[src.name] = {"source": src_digest, "copy": src_digest}
            said.append(f"{dst.name}: refreshed, its source {src} changed")
            continue
        beside = copy / f"{src.stem}.source.ipynb"
        shutil.copyfile(src, beside)
        state[src.name] = {"source": src_digest, "copy": known["copy"]}
        said.append(
            f"{dst.name}: kept your changed copy; its source {src} changed too, the new source is {beside.name}"
        )
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(state_path)
    return said


def strip_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook (nbformat 4 dict) without outputs, execution counts and widget state, in place; cells marked
    ``# NBVAL_CHECK_OUTPUT`` keep theirs (nbval compares them)."""
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if NBVAL_MARK in ("".join(source) if isinstance(source, list) else source):
            continue
        cell["outputs"] = []
        cell["execution_count"] = None
        meta = cell.get("metadata", {})
        for key in ("execution", "scrolled", "collapsed"):
            meta.pop(key, None)
    return nb


def _under_sources(path: Path) -> bool:
    """A notebook in the ``notebooks/`` folder of a project (a folder holding ``pyproject.toml``)."""
    return path.parent.name == "notebooks" and (path.parent.parent / "pyproject.toml").is_file()


def strip_for_source(model: dict[str, Any], path: str, contents_manager: Any, **kwargs: Any) -> None:
    """Jupyter's ``pre_save_hook``: a source notebook of a project saves as source (see ``strip_outputs``)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    full = Path(getattr(contents_manager, "root_dir", ".")) / path.lstrip("/")
    if _under_sources(full.resolve()):
        strip_outputs(model["content"])
