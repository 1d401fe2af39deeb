"""Postgres connection settings and the embedded cluster."""

from __future__ import annotations

import pytest

from condvest.errors import ConfigError
from condvest.settings import Settings


def test_rds_settings_build_a_dsn_that_never_prints_its_password():
    from condvest.postgres import resolve_dsn

    s = Settings.from_env(
        {
            "RDS_ENDPOINT": "db.example.internal:6543",
            "RDS_USERNAME": "postgres",
            "RDS_PASSWORD": "p@ss:w/rd",
            "RDS_DB_NAME": "condvest",
        }
    )
    dsn = resolve_dsn(s)
    assert dsn.reveal() == "postgresql://postgres:p%40ss%3Aw%2Frd@db.example.internal:6543/condvest?sslmode=prefer"
    assert "p@ss" not in repr(dsn) and "p@ss" not in repr(s)
    with pytest.raises(ConfigError, match="RDS_ENDPOINT"):
        resolve_dsn(Settings.from_env({"RDS_ENDPOINT": "db.example.internal"}))


def test_embedded_cluster_is_reused_and_listens_on_loopback_only(pg_cluster):
    import psycopg

    assert pg_cluster.start().reveal() == pg_cluster.start().reveal()
    with psycopg.connect(pg_cluster.dsn("postgres").reveal()) as c:
        assert c.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert c.execute("SELECT current_user").fetchone()[0] == "condvest"
