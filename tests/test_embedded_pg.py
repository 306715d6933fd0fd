"""Tests for gateway.embedded_pg: a real PostgreSQL is started (system binaries or pgserver wheel)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from gateway.embedded_pg import EmbeddedPostgres, find_bindir


def psql(dsn: str, sql: str) -> str:
    out = subprocess.run([str(find_bindir() / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
                          "-c", sql, dsn], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    yield tmp_path / "pg"
    # As root under a private tmp dir the cluster goes to /var/tmp/gateway-pg/<hash>: remove it too.
    digest = hashlib.sha256(str((tmp_path / "pg").absolute()).encode()).hexdigest()[:16]
    shutil.rmtree(pathlib.Path("/var/tmp/gateway-pg") / digest, ignore_errors=True)


def test_start_select_restart_persists(data_dir: pathlib.Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    dsn = pg.start()
    assert dsn.startswith("postgresql://gateway:") and "@127.0.0.1:" in dsn and dsn.endswith("/gateway")
    assert pg.dsn == dsn
    assert psql(dsn, "select 1") == "1"
    assert psql(dsn, "show unix_socket_directories") == ""
    assert psql(dsn, "show listen_addresses") == "127.0.0.1"
    psql(dsn, "create table survivor (x int); insert into survivor values (42)")
    pg.stop()
    pg.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = pg.dsn

    pwfile = data_dir / "pgpassword"
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    password = pwfile.read_text().strip()
    assert f":{password}@" in dsn

    with EmbeddedPostgres(data_dir) as pg2:  # same dir: cluster, password and database reused
        assert f":{password}@" in pg2.dsn
        assert psql(pg2.dsn, "select x from survivor") == "42"
        assert pg2.cluster_dir == pg.cluster_dir
    pg2.stop()


def test_asyncpg_connects(data_dir: pathlib.Path) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def query(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("select 1"))
        finally:
            await conn.close()

    with EmbeddedPostgres(data_dir) as pg:
        assert asyncio.run(query(pg.dsn)) == 1


def test_retries_when_port_is_taken(data_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.embedded_pg as mod

    with socket.socket() as busy:  # the port someone grabs between our probe and postgres' bind
        busy.bind(("127.0.0.1", 0))
        ports = iter([busy.getsockname()[1]])
        real = mod._free_port
        monkeypatch.setattr(mod, "_free_port", lambda: next(ports, None) or real())
        with EmbeddedPostgres(data_dir) as pg:
            assert f":{busy.getsockname()[1]}/" not in pg.dsn
            assert psql(pg.dsn, "select 1") == "1"
    assert "could not bind" in (data_dir / "postgres.log").read_text()


def test_leftover_server_from_killed_gateway_is_replaced(data_dir: pathlib.Path) -> None:
    old = EmbeddedPostgres(data_dir)
    old.start()
    assert old._proc is not None
    orphan, old._proc = old._proc, None  # as if the gateway died by SIGKILL: its server lives on
    new = EmbeddedPostgres(data_dir)
    try:
        dsn = new.start()
        assert orphan.wait(timeout=10) == 0  # the leftover server was shut down cleanly
        assert psql(dsn, "select 1") == "1"
    finally:
        new.stop()
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_stale_pid_file_of_dead_server(data_dir: pathlib.Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    assert pg._proc is not None and pg.cluster_dir is not None
    pidfile = pg.cluster_dir / "postmaster.pid"
    pid_text = pidfile.read_text()
    proc, pg._proc = pg._proc, None
    children = pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    proc.send_signal(signal.SIGKILL)  # crash: postmaster.pid stays behind, naming a dead pid
    proc.wait()
    for _ in range(100):  # its children notice the dead postmaster and exit shortly after
        if not any(os.path.exists(f"/proc/{c}") for c in children):
            break
        time.sleep(0.1)
    assert pidfile.exists()
    with EmbeddedPostgres(data_dir) as pg2:  # dead pid in postmaster.pid: postgres copes by itself
        assert psql(pg2.dsn, "select 1") == "1"
    # A stale pid file whose pid now belongs to an unrelated live process (here: pytest itself).
    pidfile.write_text(pid_text.replace(pid_text.split("\n", 1)[0], str(os.getpid()), 1))
    with EmbeddedPostgres(data_dir) as pg3:
        assert psql(pg3.dsn, "select 1") == "1"


@pytest.mark.parametrize("parent_mode", [0o755, 0o700], ids=["reachable", "unreachable"])
def test_as_root_runs_as_nobody_and_falls_back_when_unreachable(parent_mode: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    base = pathlib.Path(tempfile.mkdtemp(prefix="gateway-pg-test-"))
    base.chmod(parent_mode)  # 0700, like /root: `nobody` cannot traverse it
    digest = hashlib.sha256(str(base / "pg").encode()).hexdigest()[:16]
    messages: list[str] = []
    try:
        with EmbeddedPostgres(base / "pg", log=messages.append) as pg:
            assert pg._proc is not None and pg.cluster_dir is not None
            uid = os.stat(f"/proc/{pg._proc.pid}").st_uid
            assert uid != 0 and pg.cluster_dir.stat().st_uid == uid
            assert psql(pg.dsn, "select 1") == "1"
            if parent_mode == 0o755:
                assert pg.cluster_dir == base / "pg" / "pgdata"
                assert not any("cannot reach" in m for m in messages)
            else:
                assert pg.cluster_dir == pathlib.Path("/var/tmp/gateway-pg") / digest
                assert sum("cannot reach" in m for m in messages) == 1
    finally:
        shutil.rmtree(base)
        shutil.rmtree(pathlib.Path("/var/tmp/gateway-pg") / digest, ignore_errors=True)
