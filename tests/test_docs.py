"""Guards against drift between the code and README.md (in the spirit of Datasette's doc tests)."""
from __future__ import annotations

import re
from pathlib import Path

from gateway.app import read_config
from policies.auth import METHODS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:10])
    assert "make run" in head and "make test" in head


def test_every_auth_method_is_documented() -> None:
    for name in METHODS:
        assert f"| `{name}` |" in README, f"auth method {name!r} is missing from README's auth methods table"


def test_every_environment_variable_is_documented() -> None:
    source = (ROOT / "gateway" / "settings.py").read_text()
    names = set(re.findall(r'(?:env\.get|_secret)\("([A-Z_]+)"', source))
    assert len(names) > 10
    for name in sorted(names):
        assert f"`{name}`" in README, f"environment variable {name} is missing from README's configuration table"


def test_every_feature_says_what_it_unlocks(settings) -> None:
    plans = read_config(settings).plans
    for feature, description in plans.features.items():
        assert description.strip(), feature
