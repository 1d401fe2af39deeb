"""boto3 clients for the runner's AWS calls, built from the settings when they are needed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from condvest.errors import ConfigError
from condvest.settings import Settings


def client(service: str, settings: Settings) -> Any:
    """A boto3 client for ``service`` in the settings' region, at ``AWS_ENDPOINT_URL`` when set."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        region_name=settings.aws_region,
        endpoint_url=settings.cloud.endpoint_url,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60),
    )


def require(settings: Settings, names: Iterable[tuple[str, Any]]) -> None:
    """``ConfigError`` listing every (variable, value) pair whose value is unset."""
    missing = [name for name, value in names if value in (None, "")]
    if missing:
        raise ConfigError(f"not set; {', '.join(missing)} needed", variable=missing[0])


def error_text(exc: BaseException) -> str:
    """An AWS error as one line: the error code and message (botocore's own text otherwise)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', type(exc).__name__)}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
