"""The environment `make install` sets up (docs/installation.md): torchattacks' stale requests pin
must not win."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

from tests.conftest import REPO_ROOT


def test_requests_is_not_held_back_by_torchattacks() -> None:
    assert Version(version("torchattacks")) >= Version("3.5.1")
    assert Version(version("requests")) >= Version("2.32.4"), (
        "requests was downgraded by torchattacks' pin: install with `make install` "
        "(it applies requirements/overrides.txt)"
    )


def test_make_install_applies_the_override_file() -> None:
    overrides = (REPO_ROOT / "requirements" / "overrides.txt").read_text()
    assert "requests>=2.32.4" in overrides
    makefile = Path(REPO_ROOT / "Makefile").read_text()
    assert "--override requirements/overrides.txt" in makefile
