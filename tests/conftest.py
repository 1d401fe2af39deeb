"""Shared fixtures live in tests/fixtures/: a PostgreSQL cluster, an S3 server, the offline Polygon server,
and the retention set-up (a deployed policy over a history of bars)."""

import logging
import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.pg",
    "tests.fixtures.s3",
    "tests.fixtures.polygon",
    "tests.fixtures.retention",
    "tests.fixtures.aws",
]

#: variables that would point the suite at a real service (AWS secrets, RDS, a real lake or bucket)
REAL_SERVICE_VARS = (
    "POLYGON_API_KEY_SECRET_ARN",
    "RDS_SECRET_ARN",
    "RDS_ENDPOINT",
    "CONDVEST_PG_DSN",
    "CONDVEST_LAKE_URI",
    "S3_DATALAKE_BUCKET",
    "S3_BUCKET",
    "S3_INPUT_PREFIX",
    "S3_OUTPUT_PREFIX",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
)


@pytest.fixture(scope="session", autouse=True)
def clean_environment() -> Iterator[None]:
    """Nothing in the suite may depend on the host's settings or reach a real service.

    Session-scoped and autouse, so it is set up before every other fixture (the servers and clusters too) and
    holds for every test, including subprocesses that inherit ``os.environ``; the environment is restored at
    the end of the session.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONDVEST_TEST", os.environ.get("CONDVEST_TEST", "1"))
        for var in REAL_SERVICE_VARS:
            mp.delenv(var, raising=False)
        yield


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The runner's main() replaces the root logger's handlers and level; put them back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
