"""Embedded PostgreSQL: a private server for `gateway serve` and the tests when DATABASE_URL is unset.

Why: the gateway needs a real PostgreSQL, but a developer box or CI machine may have no Docker and
no running server, sometimes nothing but Python. So we run `postgres` ourselves as a child process,
on a private data directory, listening only on 127.0.0.1 at a free port, with a generated password.

Binaries: the system's PostgreSQL server binaries are preferred (already installed, start fastest);
the ones bundled in the `pgserver` wheel are the fallback, so a machine with only Python still works.

PostgreSQL refuses to run as root; as root we run every server tool as the user `nobody`.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import os
import pathlib
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

RUN_AS_WHEN_ROOT = "nobody"
FALLBACK_ROOT = pathlib.Path("/var/tmp/gateway-pg")
USER = DATABASE = "gateway"


def find_bindir() -> pathlib.Path:
    """Directory holding postgres, initdb, psql, pg_ctl, pg_isready (system first, then pgserver)."""
    candidates: list[pathlib.Path | None] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(pathlib.Path(out.stdout.strip()) if out.returncode == 0 else None)
    # Debian/Ubuntu keep the server out of PATH, one directory per major version: newest first.
    versions = [v for v in pathlib.Path("/usr/lib/postgresql").glob("*/bin") if v.parent.name.isdigit()]
    versions.sort(key=lambda v: int(v.parent.name), reverse=True)
    candidates += versions
    postgres = shutil.which("postgres")
    candidates.append(pathlib.Path(postgres).resolve().parent if postgres else None)
    # find_spec locates the wheel without importing it (importing pgserver has side effects).
    spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec else []
    candidates.append(pathlib.Path(locations[0], "pginstall", "bin") if locations else None)
    for d in candidates:
        if d is not None and (d / "postgres").is_file() and (d / "initdb").is_file():
            return d
    raise RuntimeError("no PostgreSQL server binaries (postgres + initdb) found; tried `pg_config --bindir`, "
                       "/usr/lib/postgresql/<N>/bin, postgres/initdb on PATH and the pgserver wheel; "
                       "install PostgreSQL (e.g. apt-get install postgresql) or `pip install pgserver`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    def __init__(self, data_dir: pathlib.Path, *, log: Callable[[str], Any] | None = None,
                 bindir: pathlib.Path | None = None) -> None:
        self.data_dir = pathlib.Path(data_dir).absolute()
        self._log = log or logging.getLogger(__name__).info
        self.bindir = bindir or find_bindir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dsn: str | None = None
        self._cluster: pathlib.Path | None = None
        self._as: dict[str, Any] = {}  # subprocess kwargs switching to the unprivileged user, if root
        self._pw_entry: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._pw_entry = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            self._as = {"user": self._pw_entry.pw_uid, "group": self._pw_entry.pw_gid, "extra_groups": []}
        # Drop PG* variables (PGHOST, PGPORT, PGSERVICE...) so nothing redirects our tools elsewhere.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def _run(self, *args: str | pathlib.Path, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        # cwd="/": the caller's cwd may be unreadable to `nobody`, and PostgreSQL tools dislike that.
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd="/",
                           env=env or self._env, **self._as)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}): {r.stderr or r.stdout}")
        return r

    def _can_access(self, path: pathlib.Path, test: str) -> bool:
        return self._run("/bin/sh", "-c", f'test {test} "$1"', "sh", str(path), check=False).returncode == 0

    def _chown_tree(self, path: pathlib.Path) -> None:
        assert self._pw_entry is not None
        uid, gid = self._pw_entry.pw_uid, self._pw_entry.pw_gid
        if path.stat().st_uid != uid:  # e.g. created earlier by a non-root run
            for p in [path, *path.rglob("*")]:
                os.chown(p, uid, gid, follow_symlinks=False)

    def _log_tail(self, lines: int = 25) -> str:
        log = self.data_dir / "postgres.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def _choose_cluster_dir(self) -> pathlib.Path:
        cluster = self.data_dir / "pgdata"
        if not self._as:
            cluster.mkdir(exist_ok=True)
            return cluster
        if not self._can_access(self.bindir / "postgres", "-x"):
            self.bindir = self._world_readable_copy_of_install()
        if self._can_access(self.data_dir, "-x"):
            cluster.mkdir(exist_ok=True)
            self._chown_tree(cluster)
            if self._can_access(cluster, "-w"):
                return cluster
        # e.g. the repo lives under /root (mode 700): keep the cluster where `nobody` can reach it.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        cluster = FALLBACK_ROOT / digest
        FALLBACK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        cluster.mkdir(mode=0o700, exist_ok=True)
        self._chown_tree(cluster)
        self._log(f"embedded PostgreSQL: {RUN_AS_WHEN_ROOT!r} cannot reach {self.data_dir}; "
                  f"using cluster directory {cluster} instead")
        return cluster

    def _world_readable_copy_of_install(self) -> pathlib.Path:
        """As root with the pgserver wheel in a venv under e.g. /root (mode 700), `nobody` cannot run
        the bundled binaries; copy the install tree (bin, lib, share) once to a place it can."""
        install = self.bindir.parent  # .../site-packages/pgserver/pginstall
        # The wheel's binaries find their shared libraries at $ORIGIN/../../../pgserver.libs: keep that layout.
        libs = install.parent.parent / "pgserver.libs"
        digest = hashlib.sha256(str(install).encode()).hexdigest()[:16]
        target = FALLBACK_ROOT / f"pginstall-{digest}"
        bindir = target / "pgserver" / "pginstall" / "bin"
        if not (bindir / "postgres").is_file():
            FALLBACK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
            staging = pathlib.Path(tempfile.mkdtemp(dir=FALLBACK_ROOT))
            shutil.copytree(install, staging / "tree" / "pgserver" / "pginstall", symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / "tree" / "pgserver.libs", symlinks=True)
            for p in [staging, *staging.rglob("*")]:
                if not p.is_symlink():
                    p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging / "tree", target)
            shutil.rmtree(staging, ignore_errors=True)
            self._log(f"embedded PostgreSQL: copied {install} to {target} so {RUN_AS_WHEN_ROOT!r} can run it")
        if not self._can_access(bindir / "postgres", "-x"):
            raise RuntimeError(f"user {RUN_AS_WHEN_ROOT!r} cannot execute {bindir}/postgres")
        return bindir

    def _password(self) -> str:
        pwfile = self.data_dir / "pgpassword"
        if pwfile.exists():
            return pwfile.read_text().strip()
        password = secrets.token_urlsafe(24)
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(password + "\n")
        return password

    def _initdb(self, cluster: pathlib.Path, password: str) -> None:
        if any(cluster.iterdir()):  # an interrupted initdb leaves a partial, unusable directory
            shutil.rmtree(cluster)
            cluster.mkdir(mode=0o700)
            if self._as:
                self._chown_tree(cluster)
        self._log(f"embedded PostgreSQL: initializing cluster in {cluster}")
        # initdb runs as `nobody`, who cannot read our 0600 password file: hand it a private copy.
        with tempfile.NamedTemporaryFile("w", prefix="gateway-pw-") as tmp:
            tmp.write(password + "\n")
            tmp.flush()
            if self._pw_entry:
                os.chown(tmp.name, self._pw_entry.pw_uid, self._pw_entry.pw_gid)
            self._run(self.bindir / "initdb", "-D", str(cluster), "--auth=scram-sha-256", "-U", USER,
                      f"--pwfile={tmp.name}", "-E", "UTF8", "--locale=C")

    def _stop_stale(self, cluster: pathlib.Path) -> None:
        try:
            pid = int((cluster / "postmaster.pid").read_text().split("\n", 1)[0])
            cwd = os.readlink(f"/proc/{pid}/cwd")  # a postmaster chdirs into its data directory
        except (OSError, ValueError):
            return  # no pid file, a dead process (postgres discards such a stale file) or not ours
        if cwd == str(cluster.resolve()):  # a leftover server of a gateway killed with SIGKILL
            self._log(f"embedded PostgreSQL: stopping leftover server (pid {pid}) on {cluster}")
            self._run(self.bindir / "pg_ctl", "stop", "-m", "fast", "-t", "30", "-D", str(cluster))
        else:  # the dead server's pid was reused by an unrelated process: postgres would refuse to start
            (cluster / "postmaster.pid").unlink()

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise RuntimeError("EmbeddedPostgres not started")
        return self._dsn

    @property
    def cluster_dir(self) -> pathlib.Path | None:
        return self._cluster

    def start(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self.dsn
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = self._password()
        cluster = self._cluster = self._choose_cluster_dir()
        if not (cluster / "PG_VERSION").exists():
            self._initdb(cluster, password)
        self._stop_stale(cluster)
        logpath = self.data_dir / "postgres.log"
        for attempt in range(4):
            port = _free_port()
            offset = logpath.stat().st_size if logpath.exists() else 0
            with open(logpath, "ab") as logf:  # the child keeps its own copy of the descriptor
                self._proc = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(cluster),
                     "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
                     "-c", "unix_socket_directories=", "-c", "max_connections=100",
                     "-c", "shared_buffers=64MB", "-c", "fsync=on", "-c", "log_min_messages=warning",
                     "-c", "logging_collector=off"],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd="/", env=self._env,
                    start_new_session=True,  # a terminal Ctrl-C must not reach it; stop() does it
                    **self._as)
            if self._wait_ready(port):
                break
            new_log = logpath.read_bytes()[offset:].decode(errors="replace")
            self._proc = None
            if attempt < 3 and re.search(r"could not bind|could not create any TCP/IP", new_log):
                continue  # someone grabbed the port between our probe and postgres' bind
            raise RuntimeError(f"embedded PostgreSQL failed to start; tail of {logpath}:\n{self._log_tail()}")
        atexit.register(self.stop)
        # Create the database on every start, not just after initdb: a crash may have come between.
        psql = [str(self.bindir / "psql"), "-XqtA", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", "postgres"]
        env = dict(self._env, PGPASSWORD=password)
        try:
            found = self._run(*psql, "-c", f"select 1 from pg_database where datname = '{DATABASE}'", env=env)
            if found.stdout.strip() != "1":
                self._run(*psql, "-c", f'create database "{DATABASE}"', env=env)
        except BaseException:
            self.stop()
            raise
        self._dsn = f"postgresql://{USER}:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/{DATABASE}"
        # For tools (psql, `gateway outbox`) while the server runs; readable only by its owner.
        with os.fdopen(os.open(self.dsn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self._dsn + "\n")
        self._log(f"embedded PostgreSQL ready on 127.0.0.1:{port} (data in {cluster})")
        return self._dsn

    def _wait_ready(self, port: int, timeout: float = 60.0) -> bool:
        """True once the server accepts connections; False if it exited (e.g. could not bind)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            r = self._run(self.bindir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), check=False)
            if r.returncode == 0:
                return True
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"embedded PostgreSQL not ready after {timeout:.0f}s; tail:\n{self._log_tail()}")

    @property
    def dsn_file(self) -> pathlib.Path:
        return self.data_dir / "dsn"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._dsn is not None:
            self.dsn_file.unlink(missing_ok=True)
        self._dsn = None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        # SIGINT = "fast" shutdown: roll back sessions, checkpoint, exit cleanly.
        for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, None)):
            proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                self._log(f"embedded PostgreSQL did not stop after {sig.name}; escalating")

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
