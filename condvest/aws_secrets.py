"""Secrets read from AWS Secrets Manager: the Polygon API key (``POLYGON_API_KEY_SECRET_ARN``).

A module of its own so that reading a secret costs only boto3 (imported when needed), not the HTTP client of
``condvest.polygon``: the runner resolves the key before every run to scrub it from the outputs.
"""

from __future__ import annotations

import json

from condvest.errors import ConfigError
from condvest.settings import Secret, Settings


def resolve_api_key(settings: Settings) -> Secret:
    """``POLYGON_API_KEY``, else the secret named by ``POLYGON_API_KEY_SECRET_ARN`` (raw or JSON)."""
    if settings.polygon_api_key is not None:
        return settings.polygon_api_key
    if settings.polygon_api_key_secret_arn:
        import boto3

        try:
            raw = boto3.client("secretsmanager", region_name=settings.aws_region).get_secret_value(
                SecretId=settings.polygon_api_key_secret_arn
            )["SecretString"]
        except Exception as exc:  # botocore errors; the message never holds the secret value
            raise ConfigError(
                f"could not read the secret: {type(exc).__name__}", variable="POLYGON_API_KEY_SECRET_ARN"
            ) from exc
        value = raw.strip()
        if value.startswith("{"):
            doc = json.loads(value)
            value = next((doc[k] for k in ("POLYGON_API_KEY", "api_key", "apiKey", "key") if doc.get(k)), "")
        if not value:
            raise ConfigError("the secret holds no API key", variable="POLYGON_API_KEY_SECRET_ARN")
        return Secret(value)
    raise ConfigError(
        "no API key: set POLYGON_API_KEY (environment or .env at the project root) or POLYGON_API_KEY_SECRET_ARN; "
        "offline, `make shell` (a terminal) or `make lab` (JupyterLab) serve the demo's market and set it",
        variable="POLYGON_API_KEY",
    )
