"""The safeguards tests pass with the app, its web framework and its database unimportable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import safeguards

PROJECT_ROOT = Path(safeguards.__file__).resolve().parent.parent
BLOCKED = ("flask", "flask_smorest", "sqlalchemy", "alembic", "psycopg", "backend")
# Set in the child run, so that this test does not start another run from inside it.
NESTED = "VIGIL_SAFEGUARDS_ISOLATED"
RUNNER = """
import sys

import pytest

BLOCKED = set(sys.argv[1].split(","))


class Refuse:
    \"\"\"Refuse to find any module of a blocked package, as if it were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked for the safeguards tests", name=name)
        return None


sys.meta_path.insert(0, Refuse())
sys.exit(pytest.main(["tests/safeguards", "-q", "-p", "no:cacheprovider"]))
"""


@pytest.mark.skipif(os.environ.get(NESTED) == "1", reason="already inside the isolated run")
def test_safeguards_tests_pass_without_flask_sqlalchemy_or_backend():
    # The command is this interpreter running the constant RUNNER: no input is untrusted.
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", RUNNER, ",".join(BLOCKED)], cwd=PROJECT_ROOT,
        env={**os.environ, NESTED: "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout
    assert "blocked for the safeguards tests" not in result.stdout
