"""`gateway check`: the one command an operator runs after editing endpoints.yaml or plans.yaml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from policies.auth import METHODS
from tests.test_config import ENDPOINTS, PLANS, edit, line_of

ROOT = Path(__file__).resolve().parent.parent


def test_check_the_real_files_as_a_subprocess() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ok: ") and "routes" in lines[0] and "tiers" in lines[0]
    assert lines[0].endswith("in endpoints.yaml and plans.yaml")


def test_check_bad_files_as_a_subprocess(tmp_path: Path) -> None:
    real_endpoints = (ROOT / "endpoints.yaml").read_text()
    bad = edit(real_endpoints, "    handler: health.healthz\n", "    handler: health.healthz\n    colour: blue\n")
    (tmp_path / "endpoints.yaml").write_text(bad)
    plans = (ROOT / "plans.yaml").read_text()
    plans = edit(plans, "  kb.edit: ", "  kb.edit: Twice\n  kb.edit: ")
    (tmp_path / "plans.yaml").write_text(plans)
    out = subprocess.run([sys.executable, "-m", "gateway", "check", "--endpoints", str(tmp_path / "endpoints.yaml"),
                          "--plans", str(tmp_path / "plans.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"endpoints.yaml:{line_of(bad, 'colour: blue')}: routes/0: unknown property 'colour'",
        f"plans.yaml:{line_of(plans, 'kb.edit:', 2)}: duplicate key 'kb.edit' (first defined on line {line_of(plans, 'kb.edit: Twice')})",
    ]
    assert "2 problem(s) found" in out.stderr


def test_check_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real handlers and auth methods: an unknown handler, auth and feature at once."""
    real = (ROOT / "endpoints.yaml").read_text()
    bad = edit(real, "handler: health.readyz", "handler: health.ready")
    bad = edit(bad, "    path: /healthz\n    handler: health.healthz\n    auth: none\n",
               "    path: /healthz\n    handler: health.healthz\n    auth: nobody\n    feature: teleport\n")
    (tmp_path / "endpoints.yaml").write_text(bad)
    assert main(["check", "--endpoints", str(tmp_path / "endpoints.yaml")]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"endpoints.yaml:{line_of(bad, 'routes:')}: handler 'health.readyz' exists in the code but no route uses it",
        f"endpoints.yaml:{line_of(bad, 'auth: nobody')}: unknown auth method 'nobody' "
        f"(known: {', '.join(sorted(METHODS))})",
        f"endpoints.yaml:{line_of(bad, 'feature: teleport')}: unknown feature 'teleport' (not declared in plans.yaml)",
        f"endpoints.yaml:{line_of(bad, 'handler: health.ready')}: unknown handler 'health.ready'",
    ]
    assert out.err.strip() == "4 problem(s) found"


def test_check_in_process_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--endpoints", str(ROOT / "endpoints.yaml"), "--plans", str(ROOT / "plans.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_check_small_files_have_no_handlers_for_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check runs against the code: a file naming handlers the code lacks cannot pass."""
    (tmp_path / "e.yaml").write_text(ENDPOINTS)
    (tmp_path / "p.yaml").write_text(PLANS)
    assert main(["check", "--endpoints", str(tmp_path / "e.yaml"), "--plans", str(tmp_path / "p.yaml")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"e.yaml:{line_of(ENDPOINTS, 'handler: t.one')}: unknown handler 't.one'" in lines
    assert all(line.startswith("e.yaml:") or line.startswith("p.yaml:") for line in lines)
