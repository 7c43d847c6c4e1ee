"""CI lints with one ruff version everywhere, and advlab's own deprecations fail the tests."""

from __future__ import annotations

import re
import warnings
from importlib.metadata import version

import pytest
import yaml

from tests.conftest import REPO_ROOT


def _pinned_ruff() -> str:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # tomllib needs Python 3.11
    pins = re.findall(r'^\s*"(ruff\W[^"]*)"', pyproject, re.MULTILINE)
    assert len(pins) == 1 and pins[0].startswith("ruff=="), f"ruff must be pinned exactly: {pins}"
    return pins[0].removeprefix("ruff==")


def test_pre_commit_and_venv_use_the_pinned_ruff() -> None:
    pinned = _pinned_ruff()
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    revs = [h["rev"] for h in hooks if h["repo"].endswith("/ruff-pre-commit")]
    assert revs == [f"v{pinned}"]
    assert version("ruff") == pinned, "reinstall with `make install` to get the pinned ruff"


def test_ci_script_lints_then_tests_and_the_workflow_runs_only_it() -> None:
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make lint\nmake test$", script, re.MULTILINE)
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "ruff check ." in makefile and "ruff format --check ." in makefile
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yaml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]
    assert [s["run"] for s in steps] == ["bash .ci/run"]
    assert "env" not in str(workflow["jobs"]), "CI settings belong in .ci/run, not the workflow"


def test_deprecation_warnings_from_advlab_code_are_errors() -> None:
    code = compile("import warnings; warnings.warn('old', DeprecationWarning)", "x.py", "exec")
    with pytest.raises(DeprecationWarning):
        exec(code, {"__name__": "advlab.some_module"})
    with warnings.catch_warnings(record=True) as caught:  # keeps pytest's filters
        exec(code, {"__name__": "some_dependency"})
    assert len(caught) == 1  # a dependency's warning is shown, not raised
