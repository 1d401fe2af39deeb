"""Remove secrets from executed notebooks, html pages, index records and log lines.

Two kinds of text are replaced with ``***``: every secret value the settings hold (exactly, plus its
html-escaped form; values shorter than ``MIN_SECRET_LEN`` characters are ignored with a warning, since
masking a one-character key would mask that character everywhere), and credentials that look like one
wherever they come from: ``apiKey=...`` in a URL and the password of a ``scheme://user:password@host`` DSN.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
#: shorter values are not masked by value (a real API key or password is longer); a warning says so
MIN_SECRET_LEN = 8

log = logging.getLogger(__name__)

_QUERY_CREDENTIAL = re.compile(r"(?i)\b(api_?key|access_?token|auth_?token)=([^&\s\"'<>\\]+)")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/\s@\"'<>]+):([^@\s/\"'<>]+)@")
_OPAQUE_MIMETYPES = ("image/png", "image/jpeg", "image/gif", "application/pdf")


class Scrubber:
    """Replaces secrets in strings and in nested notebook structures (dicts, lists)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        short = 0
        for s in secrets:
            if s and len(s) < MIN_SECRET_LEN:
                short += 1
            elif s:
                values.add(s)
                values.add(html.escape(s))
        if short:
            log.warning(
                "scrub=short_secret_ignored count=%d min_length=%d reason=would_mask_ordinary_text",
                short,
                MIN_SECRET_LEN,
            )
        # longest first, so that a secret containing another is masked whole
        self._secrets = sorted(values, key=len, reverse=True)

    def text(self, s: str) -> str:
        """``s`` with every secret value and credential-looking substring masked."""
        for secret in self._secrets:
            if secret in s:
                s = s.replace(secret, MASK)
        if "=" in s:
            s = _QUERY_CREDENTIAL.sub(lambda m: f"{m.group(1)}={MASK}", s)
        if "@" in s:
            s = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", s)
        return s

    def values(self, s: str) -> str:
        """``s`` with the exact secret values masked (for code such as a cell's source)."""
        for secret in self._secrets:
            if secret in s:
                s = s.replace(secret, MASK)
        return s

    def obj(self, value: Any, *, code: bool = False) -> Any:
        """A copy of a nested structure with every string scrubbed (binary image payloads are kept)."""
        if isinstance(value, str):
            return self.values(value) if code else self.text(value)
        if isinstance(value, dict):
            return {k: (v if k in _OPAQUE_MIMETYPES else self.obj(v, code=code)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.obj(v, code=code) for v in value]
        return value

    def notebook(self, nb: Any) -> Any:
        """A scrubbed copy of a notebook: outputs fully, sources and metadata for the exact secret values."""
        import nbformat

        cells = []
        for cell in nb["cells"]:
            clean = {k: (self.obj(v, code=True) if k in ("source", "metadata") else v) for k, v in cell.items()}
            if "outputs" in cell:
                clean["outputs"] = self.obj(cell["outputs"])
            cells.append(clean)
        out = {k: v for k, v in nb.items() if k not in ("cells", "metadata")}
        out["metadata"] = self.obj(nb["metadata"], code=True)
        out["cells"] = cells
        return nbformat.from_dict(out)


class ScrubFilter(logging.Filter):
    """A logging filter (attach it to a handler) that scrubs every record's final message."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrubber.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
