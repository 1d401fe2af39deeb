"""Shared fixtures live in tests/fixtures/: a PostgreSQL cluster, an S3 server, the offline Polygon server,
and the retention set-up (a deployed policy over a history of bars)."""

import os

# Nothing in the suite may depend on the host's time zone or reach a real service.
os.environ.setdefault("CONDVEST_TEST", "1")
for _var in (
    "POLYGON_API_KEY_SECRET_ARN",
    "RDS_SECRET_ARN",
    "RDS_ENDPOINT",
    "CONDVEST_PG_DSN",
    "CONDVEST_LAKE_URI",
    "S3_DATALAKE_BUCKET",
):
    os.environ.pop(_var, None)

pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.s3", "tests.fixtures.polygon", "tests.fixtures.retention"]
