"""Nothing hangs: a market-data server that never finishes its answer, a statement that never ends and a lock that
is never released each fail within their timeout (RELIABILITY.md row 14 and 24's lock_timeout, the issue's
"runs that never hang"). The runner's per-cell timeout is tested in tests/runner/test_runner.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time

import psycopg
import pytest

from condvest.errors import SourceUnavailable
from condvest.polygon import PolygonClient
from condvest.postgres import connect
from condvest.settings import HttpLimits, PgTimeouts, Secret, Settings


@pytest.fixture
def trickling_server():
    """An HTTP server on 127.0.0.1 that answers 200 and then sends one byte of body every 0.2 s, forever: no
    read ever waits long enough for a read timeout, only a total timeout ends the request."""
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            while not stop.wait(0.2):
                conn.sendall(b" ")
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join(5)
    srv.close()


def test_a_server_that_never_finishes_its_answer_fails_the_request_within_the_total_timeout(trickling_server):
    limits = HttpLimits(concurrency=1, read_timeout=1.0, total_timeout=1.5, max_retries=1, backoff_cap=0.01)
    settings = Settings(polygon_base_url=trickling_server, polygon_api_key=Secret("k" * 12), http=limits)

    async def ask() -> None:
        async with PolygonClient.open(settings) as client:
            await client.grouped_daily(dt.date(2025, 10, 17))

    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="TimeoutError|Timeout"):
        asyncio.run(asyncio.wait_for(ask(), timeout=15))  # a hang fails the test instead of stalling the suite
    assert time.monotonic() - t0 < 6  # two attempts of 1.5 s each, plus backoff


def test_every_workbench_postgres_session_has_statement_and_lock_timeouts(pg_settings):
    settings = pg_settings.with_(pg_timeouts=PgTimeouts(statement=1, lock=1))
    with connect(settings) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1s"
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "1s"
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        assert time.monotonic() - t0 < 5
        conn.rollback()
        conn.execute("CREATE TABLE held (x int)")
        conn.commit()
    # a session that never releases its lock (a long transaction): ours gives up after lock_timeout
    settings = pg_settings.with_(pg_timeouts=PgTimeouts(statement=10, lock=1))
    holder = psycopg.connect(pg_settings.pg_dsn.reveal())
    release = threading.Timer(15, holder.cancel)  # if the timeout were missing, end the wait anyway
    try:
        holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        release.start()
        with connect(settings) as conn:
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("SELECT count(*) FROM held")
            assert time.monotonic() - t0 < 5
    finally:
        release.cancel()
        holder.close()


def test_the_defaults_are_bounded_and_come_from_the_environment():
    s = Settings.from_env({"CONDVEST_PG_STATEMENT_TIMEOUT": "90", "CONDVEST_PG_LOCK_TIMEOUT": "7"})
    assert s.pg_timeouts == PgTimeouts(statement=90, lock=7)
    assert Settings.from_env({"CONDVEST_HTTP_TIMEOUT": "45"}).http.total_timeout == 45.0
    assert Settings().http.total_timeout > 0 and Settings().pg_timeouts.options().count("timeout=") == 2
