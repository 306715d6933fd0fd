"""`gateway outbox` shows a newcomer the emails the gateway wrote (welcome, reset, magic link)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent


def test_outbox_prints_the_newest_emails(database_url: str, base_settings) -> None:  # noqa: ANN001
    async def arrange() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("TRUNCATE outbox")
            await conn.execute("INSERT INTO outbox (kind, to_address, subject, body_text) VALUES "
                               "('password_reset', 'ada@example.com', 'Reset your password', 'Open http://x/reset?token=abc')")
        finally:
            await conn.close()

    asyncio.run(arrange())
    env = {**os.environ, "DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "gateway", "outbox"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "to ada@example.com (not sent yet)" in out.stdout.replace("  (", " (")
    assert "Subject: Reset your password" in out.stdout and "reset?token=abc" in out.stdout


def test_outbox_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"GATEWAY_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "gateway", "outbox"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "make run" in out.stderr
