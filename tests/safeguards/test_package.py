"""The safeguards package stays pure: no web framework, no database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import safeguards

PROJECT_ROOT = Path(safeguards.__file__).resolve().parent.parent
PROBE = """
import sys
import safeguards
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.fixture(scope="module")
def imported_packages() -> set[str]:
    """Return the top-level packages loaded by importing safeguards in a fresh interpreter."""
    # A fresh process: this one may have imported flask and sqlalchemy for the backend tests.
    # The command is this interpreter running the constant PROBE, so no input is untrusted.
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT,  # noqa: S603
                            capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("package", [
    "flask", "flask_smorest", "sqlalchemy", "alembic", "psycopg", "backend"])
def test_importing_safeguards_pulls_in_no_app_or_database(imported_packages, package):
    assert "safeguards" in imported_packages
    assert package not in imported_packages
