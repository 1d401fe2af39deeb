"""Every secret value a run may meet, for output scrubbing: those the settings hold and those fetched at run time.

    secret_values(settings) -> ["<api key>", "<dsn>", "<password>", ...]

``Settings.secrets()`` knows only what the environment holds. A key or a database password read from AWS
Secrets Manager while a notebook runs (``POLYGON_API_KEY_SECRET_ARN``, ``RDS_SECRET_ARN``) is fetched here too,
before the run, so that the runner can mask it in the executed notebook, the html page, the index and the
logs. A secret that cannot be fetched is left out with a warning (the run will fail on it with its own error).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

from condvest.aws_secrets import resolve_api_key  # not condvest.polygon: its HTTP client would load in every command
from condvest.errors import ConfigError
from condvest.postgres import rds_dsn
from condvest.settings import Settings

log = logging.getLogger(__name__)


def secret_values(settings: Settings) -> list[str]:
    """The settings' secrets plus those behind the settings' Secrets Manager ARNs (and each DSN's password)."""
    out = list(settings.secrets())
    if settings.polygon_api_key is None and settings.polygon_api_key_secret_arn:
        try:
            out.append(resolve_api_key(settings).reveal())
        except ConfigError as exc:
            log.warning("secrets=unavailable variable=%s", exc.variable)
    if settings.pg_dsn is None and settings.rds_secret_arn:
        try:
            dsn = rds_dsn(settings)
        except ConfigError as exc:
            log.warning("secrets=unavailable variable=%s", exc.variable)
        else:
            if dsn is not None:
                out.append(dsn.reveal())
    for value in list(out):  # a DSN's password also appears on its own (quoted or not) in error messages
        if "://" in value and (pw := urlsplit(value).password):
            out += [pw, unquote(pw)]
    return list(dict.fromkeys(v for v in out if v))
