"""Postgres connections, schema files, and an embedded throwaway cluster.

Where the DSN comes from, first match wins: ``CONDVEST_PG_DSN``; the seed's RDS variables
(``RDS_SECRET_ARN`` or ``RDS_ENDPOINT``/``RDS_USERNAME``/``RDS_PASSWORD``/``RDS_DB_NAME``); otherwise an
embedded cluster under ``<CONDVEST_HOME>/pg`` started from the installed PostgreSQL binaries, listening on
127.0.0.1 only, password-protected, and run as the ``postgres`` user when we are root (PostgreSQL
refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from condvest.errors import ClusterError, ConfigError, DatabaseError
from condvest.resources import SQL_DIR
from condvest.settings import Secret, Settings

log = logging.getLogger(__name__)

_RUN_AS = "postgres"


def _pg_bindir() -> Path:
    env = os.environ.get("CONDVEST_PG_BINDIR")
    if env:
        return Path(env)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not candidates:
        raise ClusterError("no PostgreSQL server binaries found (install postgresql, or set CONDVEST_PG_DSN)")
    return Path(candidates[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedCluster:
    """A PostgreSQL cluster in ``<home>/pg``: created on first use, reused while it runs."""

    def __init__(self, home: Path, user: str | None = None) -> None:
        self.run_as = user if user is not None else (_RUN_AS if os.geteuid() == 0 else "")
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        self.dir = home / "pg"
        if self.run_as and not self._reachable(home):
            # the postgres user cannot enter the checkout (e.g. under /root): keep the cluster in /tmp
            digest = hashlib.sha1(str(home).encode()).hexdigest()[:12]
            self.dir = Path(tempfile.gettempdir()) / f"condvest-pg-{digest}"
        self.data = self.dir / "data"
        self.meta_file = self.dir / "cluster.json"

    def _reachable(self, path: Path) -> bool:
        return (
            subprocess.run(
                ["runuser", "-u", self.run_as, "--", "test", "-x", str(path)], capture_output=True
            ).returncode
            == 0
        )

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self._cmd(*args), capture_output=True, text=True)
        if r.returncode != 0:
            raise ClusterError(f"{Path(args[0]).name} failed: {(r.stderr or r.stdout).strip()[-800:]}")
        return r

    def _meta(self) -> dict[str, Any]:
        return json.loads(self.meta_file.read_text())

    def dsn(self, dbname: str = "condvest") -> Secret:
        m = self._meta()
        return Secret(f"postgresql://condvest:{quote(m['password'], safe='')}@127.0.0.1:{m['port']}/{dbname}")

    def _chown(self, path: Path) -> None:
        if self.run_as:
            shutil.chown(path, self.run_as, self.run_as)

    def _init(self) -> None:
        bindir = _pg_bindir()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._chown(self.dir)
        password = secrets.token_urlsafe(18)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(password + "\n")
        self._chown(pwfile)
        os.chmod(pwfile, 0o600)
        try:
            self._run(
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "condvest",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        meta = {"port": _free_port(), "password": password, "bindir": str(bindir)}
        self.meta_file.write_text(json.dumps(meta))
        os.chmod(self.meta_file, 0o600)

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn("postgres").reveal(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> Secret:
        """Start (creating if needed) and return the DSN of database ``condvest``."""
        if not (self.data / "PG_VERSION").exists():
            log.info("embedded_pg=init dir=%s", self.data)
            self._init()
        if not self._ready():
            m = self._meta()
            bindir = Path(m["bindir"])
            if not bindir.exists():
                bindir = _pg_bindir()
            port = m["port"]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:  # taken by someone else: move
                    m["port"] = port = _free_port()
                    self.meta_file.write_text(json.dumps(m))
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_wal_size=2GB -c shared_buffers=256MB -c log_min_messages=warning"
            )
            log.info("embedded_pg=start port=%s", port)
            self._run(
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            )
        self._ensure_database()
        return self.dsn()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres").reveal(), autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'condvest'").fetchone():
                c.execute("CREATE DATABASE condvest")

    def exists(self) -> bool:
        """Whether the cluster was created (``initdb`` ran)."""
        return (self.data / "PG_VERSION").exists() and self.meta_file.exists()

    def running(self) -> bool:
        """Whether the cluster answers on its port."""
        return self.exists() and self._ready()

    def port(self) -> int | None:
        return int(self._meta()["port"]) if self.meta_file.exists() else None

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            m = self._meta()
            self._run(str(Path(m["bindir"]) / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(ClusterError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def rds_dsn(settings: Settings) -> Secret | None:
    """The DSN the seed's RDS settings name (``RDS_SECRET_ARN`` read from Secrets Manager), or ``None``."""
    if settings.rds_secret_arn:
        import boto3

        try:
            raw = boto3.client("secretsmanager", region_name=settings.aws_region).get_secret_value(
                SecretId=settings.rds_secret_arn
            )["SecretString"]
            s = json.loads(raw)
        except Exception as exc:  # botocore errors, bad JSON
            raise ConfigError(f"could not read the secret: {type(exc).__name__}", variable="RDS_SECRET_ARN") from exc
        host, user, pw = s.get("host"), s.get("username"), s.get("password")
        db, port = s.get("dbname", settings.rds_db_name), s.get("port", 5432)
    elif settings.rds_endpoint:
        host, user, db, port = settings.rds_endpoint, settings.rds_username, settings.rds_db_name, 5432
        pw = settings.rds_password.reveal() if settings.rds_password else None
        if ":" in host:
            host, _, p = host.partition(":")
            port = int(p)
    else:
        return None
    if not (host and user and pw):
        raise ConfigError("RDS settings need an endpoint, a user name and a password", variable="RDS_ENDPOINT")
    return Secret(f"postgresql://{quote(user, safe='')}:{quote(pw, safe='')}@{host}:{port}/{db}?sslmode=prefer")


#: the one line a reader gets when the embedded cluster is needed but not running
NOT_RUNNING = "the embedded PostgreSQL is not running: start it with `python -m condvest db start` (or `make lab`)"


def resolve_dsn(settings: Settings, *, start: bool = True) -> Secret:
    """The DSN to use: explicit, RDS, or the embedded cluster (started on demand unless ``start=False``,
    which raises ``ClusterError`` saying how to start it instead)."""
    if settings.pg_dsn is not None:
        return settings.pg_dsn
    rds = rds_dsn(settings)
    if rds is not None:
        return rds
    cluster = EmbeddedCluster(settings.home)
    if not start:
        if not cluster.running():
            raise ClusterError(NOT_RUNNING)
        return cluster.dsn()
    if not cluster.running():
        log.warning("embedded_pg=starting dir=%s stop_with=%r", cluster.dir, "python -m condvest db stop")
    return cluster.start()


def connect(
    settings: Settings, *, autocommit: bool = False, dsn: Secret | None = None, start_embedded: bool = True
) -> Any:
    """A new psycopg connection (caller closes it; use it as a context manager). With
    ``start_embedded=False`` a stopped embedded cluster is not started (``ClusterError`` says how)."""
    import psycopg

    dsn = dsn or resolve_dsn(settings, start=start_embedded)
    try:
        # statement_timeout and lock_timeout on every session: a query or a lock wait never hangs a run
        return psycopg.connect(
            dsn.reveal(), autocommit=autocommit, connect_timeout=10, options=settings.pg_timeouts.options()
        )
    except psycopg.OperationalError as exc:
        # psycopg's message can contain the host but not the password; keep only the first line
        raise DatabaseError(f"cannot connect: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def sql_files(names: Sequence[str] | None = None) -> list[Path]:
    """The schema files in apply order (``sql/NNN_*.sql``), or the named ones."""
    files = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    if names is not None:
        wanted = set(names)
        files = [f for f in files if f.name in wanted or f.stem in wanted]
    return files


def apply_sql(conn: Any, files: Sequence[Path] | None = None) -> list[str]:
    """Apply schema files in order, each in its own transaction; every file is safe to re-apply."""
    applied = []
    for f in files if files is not None else sql_files():
        try:
            with conn.transaction():
                conn.execute(f.read_text())
        except Exception as exc:
            raise DatabaseError(str(exc).strip().splitlines()[0], sql_file=f.name) from exc
        applied.append(f.name)
    return applied
