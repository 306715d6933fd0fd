"""Benchmark: the gateway's gated routes against a bare aiohttp handler, same load, one run.

    make bench                                   # or: .venv/bin/python scripts/bench.py [options]
    make bench BENCH_ARGS="--duration 20 --connections 50"

What it measures, side by side, with the same concurrency and duration for each target:

  bare    GET /  of a bare aiohttp JSON handler (scripts/bench_bare.py): this stack's ceiling here
  read    GET /api/embed-token: session cookie, feature gate (PRO), rate limit, Postgres read
  widget  POST /api/widget/token: embed token + Origin allow-list, two rate limits, Twilio JWT
  session GET /api/auth/session (only with --targets ...,session): the pipeline with no handler SQL

For each: requests per second, p50/p99 latency and the ratio to the bare handler; then the gateway
process's peak memory, and whether the targets hold (read >= 0.70x bare, widget >= 0.50x bare,
memory < 150 MB). The report goes to stdout and, as markdown, to --out.

It also shows where the CPU went during each run (the server, PostgreSQL, the load tool, and
everything else on the machine) and the server's CPU microseconds per request. The figures only
mean something on a quiet machine: a run during which other processes used more than a quarter
of a core is flagged in the report (re-run it). CPU µs/request is the steadier figure to compare
two versions of the code by.

Everything is set up and torn down here: a private PostgreSQL in a temp dir (unless DATABASE_URL
is set), migrations, the gateway and the bare server as subprocesses on free loopback ports, an
account signed in through the API, put on plan PRO, with one embed token for bench.example. Load
comes from `wrk` (Debian package `wrk`; installed with apt-get when missing and running as root)
or else from a small aiohttp load generator in separate processes. Loopback only. Rate limits stay
on; RATE_LIMIT_MULTIPLIER (--rate-limit-multiplier) scales them so the load does not trip them.
The gateway logs at its default level (per-request logging is part of the real cost) to a file.

--py-spy PATH samples the gateway with py-spy during each gated target's measured run and prints
where its time goes (the figures of such a run are perturbed by the sampling; compare without it).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"  # loopback only, always
ORIGIN = "https://bench.example"
GOALS = {"read": 0.70, "widget": 0.50}
MEMORY_GOAL_MB = 150.0
NOISE_CPU = 0.25  # "other" CPU (cores) above which a run is flagged as disturbed
PASSWORD = "bench-password-123"


# ---------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {
        "cpus": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}",
        "cpu model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        quota = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota and quota[0] != "max":
            info["cgroup cpu quota"] = f"{int(quota[0]) / int(quota[1]):.2f} CPUs"
    with contextlib.suppress(ImportError):
        import aiohttp

        info["aiohttp"] = aiohttp.__version__
    return info


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) in kB from /proc/<pid>/status."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (from /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the machine spent in processes so far (user + nice + system, plus steal: time
    the hypervisor gave to someone else), all CPUs, from /proc/stat. Interrupt time is left out:
    it is mostly the loopback traffic of the benchmark itself."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
    return 0.0


def children_cpu_seconds() -> float:
    """CPU seconds of our finished children (the load generator runs), from getrusage."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_tree(root: int) -> list[int]:
    """A process and its children (the embedded PostgreSQL's postmaster and its backends)."""
    pids = [root]
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == root:
                        pids.append(int(entry.name))
    return pids


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM (Linux: write 5 to clear_refs), to see the peak of one phase."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, logfile: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before answering; tail of {logfile}:\n{tail(logfile)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback URL we built
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f}s; tail of {logfile}:\n{tail(logfile)}")


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class Children:
    """Every process we start, stopped in reverse order: SIGTERM, then SIGKILL."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        self.procs.clear()


# ---------------------------------------------------------------------------------------------
# targets and results


@dataclasses.dataclass
class Target:
    name: str
    label: str
    url: str
    method: str = "GET"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: str | None = None
    server: str = "gateway"  # which process answers: gateway | bare


@dataclasses.dataclass
class Result:
    target: Target
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    bad_status: int  # non-2xx/3xx replies
    socket_errors: int
    server_cpu: float | None = None  # CPU share (1.0 = one core) of the answering process
    db_cpu: float | None = None  # CPU share of the embedded PostgreSQL, all its processes
    load_cpu: float | None = None  # CPU share of the load generator
    other_cpu: float | None = None  # CPU share of everything else on the machine (noise)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def cpu_us_per_request(self, share: float | None) -> str:
        """CPU microseconds per request: steadier than req/s when the machine is shared."""
        return "-" if share is None or not self.rps else f"{share / self.rps * 1e6:.0f}"


# ---------------------------------------------------------------------------------------------
# load generators


WRK_LUA = """\
wrk.method = "{method}"
{headers}
{body}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %d %d %.0f %.0f %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def _lua_string(value: str) -> str:
    if "]==]" in value:
        raise ValueError("value not representable as a Lua long string")
    return f"[==[{value}]==]"


def find_wrk(allow_install: bool) -> str | None:
    found = shutil.which("wrk")
    if found or not allow_install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("wrk not found; trying `apt-get install -y wrk` once")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        try:
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired):
            break
        if shutil.which("wrk"):
            return shutil.which("wrk")
    log("could not install wrk; using the built-in aiohttp load generator")
    return None


class WrkLoad:
    name = "wrk"

    def __init__(self, wrk: str, threads: int, connections: int, workdir: Path) -> None:
        self.wrk, self.threads, self.connections, self.workdir = wrk, threads, connections, workdir
        version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
        self.description = f"wrk ({version.split(' Copyright')[0].strip()}), {threads} thread(s)"

    def _script(self, target: Target) -> Path:
        headers = "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in target.headers.items())
        body = f"wrk.body = {_lua_string(target.body)}" if target.body is not None else ""
        path = self.workdir / f"wrk-{target.name}.lua"
        path.write_text(WRK_LUA.format(method=target.method, headers=headers, body=body))
        return path

    def run(self, target: Target, seconds: float) -> Result:
        argv = [self.wrk, "-t", str(self.threads), "-c", str(self.connections), "-d", f"{max(1, round(seconds))}s",
                "--latency", "--timeout", "10s", "-s", str(self._script(target)), target.url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        match = re.search(r"^BENCH_RESULT (.+)$", out.stdout, re.M)
        if out.returncode != 0 or not match:
            raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        requests, duration_us, p50, p99, status, *sock = (int(float(x)) for x in match.group(1).split())
        return Result(target, requests, duration_us / 1e6, p50 / 1000, p99 / 1000, status, sum(sock))


class PythonLoad:
    """Fallback: N keep-alive connections split over worker processes (this file, `_load` mode)."""

    name = "python"

    def __init__(self, workers: int, connections: int) -> None:
        self.workers = max(1, min(workers, connections))
        self.connections = connections
        self.description = (f"built-in aiohttp load generator, {self.workers} process(es) (wrk not used: "
                            "a Python client may saturate before a fast server, which flatters the ratios)")

    def run(self, target: Target, seconds: float) -> Result:
        spec = json.dumps(dataclasses.asdict(target))
        share = [self.connections // self.workers + (i < self.connections % self.workers) for i in range(self.workers)]
        procs = [subprocess.Popen([sys.executable, __file__, "_load", spec, str(n), str(seconds)],
                                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) for n in share]
        latencies: list[float] = []
        requests = bad = errors = 0
        elapsed = 0.0
        try:
            for proc in procs:
                out, _ = proc.communicate(timeout=seconds + 60)
                part = json.loads(out)
                latencies += part["latencies"]
                requests += part["requests"]
                bad += part["bad_status"]
                errors += part["errors"]
                elapsed = max(elapsed, part["elapsed"])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000 if latencies else 0.0

        return Result(target, requests, elapsed, pct(50), pct(99), bad, errors)


async def _load_worker(target: dict[str, Any], connections: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    counts = {"requests": 0, "bad_status": 0, "errors": 0}
    data = target["body"].encode() if target["body"] is not None else None
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        end = started + seconds

        async def connection() -> None:
            while (t0 := time.perf_counter()) < end:
                try:
                    async with session.request(target["method"], target["url"], headers=target["headers"], data=data) as r:
                        await r.read()
                        counts["bad_status"] += r.status >= 400
                except Exception:  # noqa: BLE001 - counted, reported as socket errors
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                counts["requests"] += 1

        await asyncio.gather(*(connection() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {**counts, "latencies": latencies, "elapsed": elapsed}


# ---------------------------------------------------------------------------------------------
# setup through the API


async def _call(session: Any, method: str, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with session.request(method, url, **kw) as r:
        text = await r.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return r.status, body, r


async def prepare_account(base: str, dsn: str, want_pro: bool, want_token: bool) -> dict[str, Any]:
    """Register, sign in, go PRO, create an embed token for bench.example; all but the plan via HTTP."""
    import aiohttp
    import asyncpg

    from gateway import db as gdb

    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    out: dict[str, Any] = {"email": email}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        status, body, _ = await _call(http, "POST", f"{base}/api/auth/register", json={
            "name": "Bench Owner", "email": email, "password": PASSWORD, "organizationName": "Bench Dental"})
        if status != 201:
            raise SystemExit(f"register answered {status}: {body}")
        out["organization_id"] = body["organizationId"]
        status, body, resp = await _call(http, "POST", f"{base}/api/auth/callback/credentials",
                                         json={"email": email, "password": PASSWORD})
        cookie = next((m for name, m in resp.cookies.items() if name.endswith("next-auth.session-token")), None)
        if status != 200 or cookie is None:
            raise SystemExit(f"sign-in answered {status} (session cookie {'set' if cookie else 'missing'}): {body}")
        out["cookie"] = f"{cookie.key}={cookie.value}"
        if want_pro:
            # No self-serve plan change without Stripe: set it as an operator would, then tell every
            # gateway process (the session cache holds the plan) as the real plan change does.
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(
                    "UPDATE organizations SET plan = 'PRO', website_url = $2, phone_number = COALESCE(phone_number, $3) "
                    "WHERE id = $1", uuid.UUID(out["organization_id"]), ORIGIN, "+15555550123")
                await gdb.notify(conn, {"kind": "organization_changed", "id": out["organization_id"]})
            finally:
                await conn.close()
        if want_token:
            status, body, _ = await _call(http, "POST", f"{base}/api/embed-token", headers={"Cookie": out["cookie"]},
                                          json={"label": "bench", "allowedDomains": ["bench.example"]})
            if status not in (200, 201) or not isinstance(body, dict) or "token" not in body:
                raise SystemExit(f"POST /api/embed-token answered {status}: {body}")
            out["embed_token"] = body["token"]
    return out


async def verify(targets: list[Target]) -> None:
    """Each target must answer 2xx before we measure it; otherwise show why and stop."""
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for t in targets:
            status, body, _ = await _call(http, t.method, t.url, headers=t.headers,
                                          data=t.body.encode() if t.body is not None else None)
            shown = json.dumps(body)[:400] if not isinstance(body, str) else body[:400]
            if not 200 <= status < 300:
                raise SystemExit(f"{t.label} answered {status} before the benchmark: {shown}")
            log(f"ok {status} {t.label}: {shown[:160]}")


async def cleanup_account(dsn: str, organization_id: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM organizations WHERE id = $1", uuid.UUID(organization_id))
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# profiling (optional): py-spy on the gateway during a measured run


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Inclusive and self sample shares per function from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [re.sub(r" \((.*?)(:\d+)?\)$", r" (\1)", f) for f in stack.split(";") if f]
        for f in set(frames):
            inclusive[f] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "", "| inclusive | self | function |", "|---:|---:|---|"]
    for f, n in inclusive.most_common(top):
        lines.append(f"| {100 * n / total:.1f}% | {100 * own[f] / total:.1f}% | `{f}` |")
    lines += ["", "top self time:", "", "| self | function |", "|---:|---|"]
    for f, n in own.most_common(top):
        lines.append(f"| {100 * n / total:.1f}% | `{f}` |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the run


def render(results: list[Result], facts: dict[str, str], memory: dict[str, float], goals: list[str]) -> str:
    bare = next((r for r in results if r.target.name == "bare"), None)
    lines = ["# Gateway benchmark", "",
             "| target | req/s | p50 ms | p99 ms | ratio to bare | errors | CPU: server | PostgreSQL | load tool | other "
             "| server CPU µs/req | PostgreSQL CPU µs/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def pct(share: float | None) -> str:
        return "-" if share is None else f"{100 * share:.0f}%"

    for r in results:
        ratio = f"{r.rps / bare.rps:.2f}x" if bare and bare.rps else "-"
        errors = r.bad_status + r.socket_errors
        lines.append(f"| {r.target.label} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {ratio} | {errors} "
                     f"| {pct(r.server_cpu)} | {pct(r.db_cpu if r.target.server == 'gateway' else None)} "
                     f"| {pct(r.load_cpu)} | {pct(r.other_cpu)} | {r.cpu_us_per_request(r.server_cpu)} "
                     f"| {r.cpu_us_per_request(r.db_cpu if r.target.server == 'gateway' else None)} |")
    lines += ["", "CPU columns: average share of one core during the measured run (100% = one core busy); "
                  "µs/req: that CPU time divided by the requests served (less sensitive to a busy machine)."]
    noisy = [r.target.name for r in results if (r.other_cpu or 0) > NOISE_CPU]
    if noisy:
        lines += ["", f"**Warning: other processes used over {100 * NOISE_CPU:.0f}% of a core during "
                      f"{', '.join(noisy)}: the machine was not quiet, so these figures understate it. Re-run.**"]
    lines += ["", "| | |", "|---|---|"]
    if memory:
        lines.append(f"| gateway peak RSS, whole life (VmHWM) | {memory['life']:.1f} MB |")
        if "load" in memory:
            lines.append(f"| gateway peak RSS during the load | {memory['load']:.1f} MB |")
        if "bare" in memory:
            lines.append(f"| bare handler peak RSS | {memory['bare']:.1f} MB |")
    for k, v in facts.items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "Targets (one process):", ""] + [f"- {g}" for g in goals]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = set(names) - {"bare", "read", "widget", "session"}
    if unknown:
        raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))}")
    wrk = None if args.tool == "python" else find_wrk(allow_install=True)
    if args.tool == "wrk" and not wrk:
        raise SystemExit("--tool wrk: wrk is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    os.chmod(tmp, 0o755)  # the embedded PostgreSQL runs as `nobody` when we are root
    children = Children()
    pg = None
    dsn = args.database_url
    account: dict[str, Any] = {}
    results: list[Result] = []
    profiles: dict[str, str] = {}
    memory: dict[str, float] = {}
    try:
        threads = args.threads or 1
        load = WrkLoad(wrk, min(threads, args.connections), args.connections, tmp) if wrk else \
            PythonLoad(args.threads or max(1, len(os.sched_getaffinity(0)) // 2), args.connections)

        # -- database
        from gateway.db import migrate
        if not dsn:
            from gateway.embedded_pg import EmbeddedPostgres

            pg = EmbeddedPostgres(tmp / "pg", log=lambda m: None)
            log("starting a private PostgreSQL")
            dsn = pg.start()
        applied = asyncio.run(migrate(dsn))
        log(f"migrations applied: {len(applied)}")

        # -- servers
        gw_port, bare_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PUBLIC_BASE_URL", "HOST", "PORT", "APP_ORIGINS")}
        env.update(DATABASE_URL=dsn, HOST=HOST, PORT=str(gw_port), GATEWAY_DATA_DIR=str(tmp / "gateway-data"),
                   RATE_LIMIT_MULTIPLIER=str(args.rate_limit_multiplier), LOG_LEVEL=args.gateway_log_level)
        gw_log, bare_log = tmp / "gateway.log", tmp / "bare.log"
        with open(gw_log, "wb") as gw_out, open(bare_log, "wb") as bare_out:
            gateway = children.start("gateway", [sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env,
                                     stdout=gw_out, stderr=subprocess.STDOUT)
            bare = children.start("bare", [sys.executable, str(ROOT / "scripts" / "bench_bare.py"), str(bare_port)],
                                  cwd=ROOT, stdout=bare_out, stderr=subprocess.STDOUT)
        base = f"http://{HOST}:{gw_port}"
        wait_http(f"{base}/healthz", gateway, "the gateway", gw_log)
        wait_http(f"http://{HOST}:{bare_port}/", bare, "the bare handler", bare_log)
        log(f"gateway pid {gateway.pid} on {base}, bare pid {bare.pid} on port {bare_port}")

        # -- account, plan, embed token (through the API)
        account = asyncio.run(prepare_account(base, dsn, want_pro=bool({"read", "widget"} & set(names)),
                                              want_token="widget" in names))
        targets = []
        for n in names:
            if n == "bare":
                targets.append(Target("bare", "bare aiohttp JSON handler", f"http://{HOST}:{bare_port}/", server="bare"))
            elif n == "read":
                targets.append(Target("read", "GET /api/embed-token (session, gate, limit, SQL)",
                                      f"{base}/api/embed-token", headers={"Cookie": account["cookie"]}))
            elif n == "widget":
                targets.append(Target("widget", "POST /api/widget/token (embed token, limits, JWT)",
                                      f"{base}/api/widget/token", method="POST",
                                      headers={"Content-Type": "application/json", "Origin": ORIGIN},
                                      body=json.dumps({"embedToken": account["embed_token"]})))
            elif n == "session":
                targets.append(Target("session", "GET /api/auth/session (session, limit, no handler SQL)",
                                      f"{base}/api/auth/session", headers={"Cookie": account["cookie"]}))
        asyncio.run(verify(targets))

        # -- load: warm-up, then the measured run, one target at a time
        memory["life_before_load"] = proc_status(gateway.pid).get("VmHWM", 0) / 1024
        reset_ok = reset_peak_rss(gateway.pid)
        for t in targets:
            if args.warmup > 0:
                load.run(t, args.warmup)
            spy = None
            if args.py_spy and t.server == "gateway":
                raw = tmp / f"profile-{t.name}.txt"
                spy = children.start("py-spy", [args.py_spy, "record", "--pid", str(gateway.pid), "--format", "raw",
                                        "--rate", "250", "--nonblocking", "--output", str(raw),
                                        "--duration", str(max(1, round(args.duration)))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            server_pid = gateway.pid if t.server == "gateway" else bare.pid
            pm = postmaster_pid(pg) if pg is not None else -1
            db0 = {pid: cpu_seconds([pid]) for pid in process_tree(pm)} if pm > 0 else {}
            cpu0, load0, busy0 = cpu_seconds([server_pid]), children_cpu_seconds(), machine_busy_seconds()
            wall0 = time.monotonic()
            result = load.run(t, args.duration)
            wall = time.monotonic() - wall0
            result.server_cpu = (cpu_seconds([server_pid]) - cpu0) / wall
            if pm > 0:  # backends started during the run count from zero
                db1 = {pid: cpu_seconds([pid]) for pid in process_tree(pm)}
                result.db_cpu = sum(v - db0.get(pid, 0.0) for pid, v in db1.items()) / wall
            result.load_cpu = (children_cpu_seconds() - load0) / wall
            other = (machine_busy_seconds() - busy0) / wall - result.server_cpu - (result.db_cpu or 0) - result.load_cpu
            result.other_cpu = max(0.0, other)
            if spy is not None:
                spy.wait(timeout=60)
                profiles[t.name] = summarize_profile(raw) if raw.exists() else "(py-spy wrote nothing)"
                if args.profile_dir:
                    Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
                    shutil.copy(raw, Path(args.profile_dir) / raw.name)
            results.append(result)
            log(f"{t.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                f"{result.bad_status} non-2xx, {result.socket_errors} socket errors")
            if result.bad_status:
                asyncio.run(_show_failure(t))
        status = proc_status(gateway.pid)
        if gateway.poll() is not None:
            raise SystemExit(f"the gateway died during the benchmark; tail of its log:\n{tail(gw_log)}")
        memory["life"] = max(memory.pop("life_before_load"), status.get("VmHWM", 0) / 1024)
        if reset_ok:
            memory["load"] = status.get("VmHWM", 0) / 1024
        memory["bare"] = proc_status(bare.pid).get("VmHWM", 0) / 1024
    finally:
        children.stop_all()
        if account.get("organization_id") and args.database_url:
            with contextlib.suppress(Exception):
                asyncio.run(cleanup_account(dsn, account["organization_id"]))
        if pg is not None:
            cluster = pg.cluster_dir
            pg.stop()
            if cluster and not cluster.is_relative_to(tmp):
                shutil.rmtree(cluster, ignore_errors=True)
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    by_name = {r.target.name: r for r in results}
    goals: list[str] = []
    bare_r = by_name.get("bare")
    for name, goal in GOALS.items():
        r = by_name.get(name)
        if r and bare_r and bare_r.rps:
            ratio = r.rps / bare_r.rps
            goals.append(f"{r.target.label}: {ratio:.2f}x bare, goal >= {goal:.2f}x: **{'met' if ratio >= goal else 'NOT met'}**")
    if "life" in memory:
        peak = memory["life"]
        goals.append(f"gateway peak RSS {peak:.1f} MB, goal < {MEMORY_GOAL_MB:.0f} MB: **{'met' if peak < MEMORY_GOAL_MB else 'NOT met'}**")
    failed = sum(r.bad_status + r.socket_errors for r in results)
    if failed:
        goals.append(f"**{failed} failed request(s) during the measured runs: the figures are not valid**")
    facts = machine()
    facts.update({
        "load tool": load.description,
        "load": f"{args.connections} connections, {args.duration:g} s per target after a {args.warmup:g} s warm-up, same for all",
        "gateway": f"1 process, LOG_LEVEL={args.gateway_log_level} (to a file), "
                   f"RATE_LIMIT_MULTIPLIER={args.rate_limit_multiplier:g} (limits on)",
        "database": "embedded PostgreSQL (same machine)" if pg is not None else "DATABASE_URL",
        "wall time": f"{time.monotonic() - started:.0f} s",
    })
    if args.py_spy:
        facts["note"] = "py-spy sampled the gateway during this run: throughput figures are perturbed"
    report = render(results, facts, memory, goals)
    for name, text in profiles.items():
        report += f"\n## Profile: {by_name[name].target.label}\n\n{text}\n"
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    log(f"written to {out}")
    return 1 if failed else 0


def postmaster_pid(pg: Any) -> int:
    cluster = pg.cluster_dir
    try:
        return int((cluster / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError, TypeError):
        return -1


async def _show_failure(t: Target) -> None:
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        status, body, _ = await _call(http, t.method, t.url, headers=t.headers,
                                      data=t.body.encode() if t.body is not None else None)
    log(f"{t.name}: a request after the run answered {status}: {str(body)[:300]}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:  # a worker of the built-in load generator
        target, connections, seconds = json.loads(argv[1]), int(argv[2]), float(argv[3])
        print(json.dumps(asyncio.run(_load_worker(target, connections, seconds))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--connections", type=int, default=20, help="concurrent keep-alive connections (default 20)")
    p.add_argument("--duration", type=float, default=10, help="measured seconds per target (default 10)")
    p.add_argument("--warmup", type=float, default=2, help="warm-up seconds per target, not measured (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="wrk threads (default 1: one wrk thread drives far more than one Python process serves, "
                        "and more would take CPU from the server) or load-generator processes (default nproc/2)")
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto", help="load generator (default: wrk if available)")
    p.add_argument("--targets", default="bare,read,widget", help="comma list of bare,read,widget,session (default bare,read,widget)")
    p.add_argument("--rate-limit-multiplier", type=float, default=10000,
                   help="RATE_LIMIT_MULTIPLIER for the gateway (default 10000: widget_per_ip allows 60/min per "
                        "address, and all load comes from one address)")
    p.add_argument("--gateway-log-level", default="info", help="the gateway's LOG_LEVEL (default info, its default)")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or None,
                   help="use this PostgreSQL (default: $DATABASE_URL, else a private embedded one)")
    p.add_argument("--out", default=str(ROOT / "var" / "bench" / "latest.md"), help="markdown report (default var/bench/latest.md)")
    p.add_argument("--py-spy", metavar="PATH", help="profile the gateway with this py-spy during each gated run")
    p.add_argument("--profile-dir", help="also keep py-spy's raw collapsed stacks here")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, wrk scripts) for inspection")
    args = p.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--connections must be >= 1, --duration > 0, --warmup >= 0")
    if args.py_spy and not shutil.which(args.py_spy):
        p.error(f"--py-spy: {args.py_spy} is not executable")

    # Bounded in time: a watchdog turns a hang into a clean stop (the finally blocks still run).
    targets = max(1, len(args.targets.split(",")))
    budget = 120 + targets * (args.duration + args.warmup + 15)

    def timeout(*_: Any) -> None:
        raise SystemExit(f"benchmark exceeded its {budget:.0f} s budget; stopped")

    def terminate(*_: Any) -> None:
        raise SystemExit("interrupted")

    signal.signal(signal.SIGALRM, timeout)
    signal.signal(signal.SIGTERM, terminate)
    signal.alarm(int(budget))
    try:
        return run(args)
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    raise SystemExit(main())
