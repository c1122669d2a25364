"""deploy/vigil.env.sample lists every setting as `vigil env-sample` renders it, holds no key,
and once its keys are generated with the commands it gives, a production app starts from it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from backend import config, create_app, env_sample
from backend.cli import cli
from backend.health.service import keys_loaded

GUNICORN_CONF = config.PROJECT_ROOT / "gunicorn.conf.py"
ASSIGNMENT = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")


def assignments(text: str) -> dict[str, str]:
    """Return the variables the file sets (its uncommented `NAME=value` lines)."""
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#"))


def generated(command: str) -> str:
    """Run a `python -c` key command of the sample with this interpreter; return its output."""
    argv = shlex.split(command)
    assert argv[0] == "python", command
    ran = subprocess.run(  # noqa: S603 - the sample's own command, no shell
        [sys.executable, *argv[1:]], capture_output=True, text=True, check=True, timeout=30)
    return ran.stdout.strip()


def test_the_committed_sample_is_the_rendering():
    assert env_sample.PATH.read_text() == env_sample.render(), "run `vigil env-sample`"


def entry_of(text: str, name: str) -> str:
    """Return the paragraph of the sample that sets or shows `name`."""
    return next(entry for entry in text.split("\n\n") if re.search(
        rf"^(# )?{name}=", entry, re.MULTILINE))


def test_every_setting_appears_once_with_its_doc():
    text = env_sample.render()
    names = [match[1] for line in text.splitlines() if (match := ASSIGNMENT.match(line))]
    assert names == [setting.env for setting in (*env_sample.OUTSIDE, *config.SETTINGS)]
    for setting in (*env_sample.OUTSIDE, *config.SETTINGS):
        comments = " ".join(line.removeprefix("# ") for line in
                            entry_of(text, setting.env).splitlines()[:-1])
        assert setting.doc in comments, setting.env


def test_every_variable_gunicorn_reads_is_in_the_sample():
    read = re.findall(r"environ\.get\(\"(VIGIL_[A-Z_]+)\"", GUNICORN_CONF.read_text())
    assert read
    assert set(read) <= {match[1] for line in env_sample.render().splitlines()
                         if (match := ASSIGNMENT.match(line))}


def test_the_sample_holds_no_key_and_marks_the_keys_required():
    text = env_sample.render()
    set_in_sample = assignments(text)
    for key in config.KEY_SETTINGS:
        assert set_in_sample[f"VIGIL_{key}"] == "", key
    for name in env_sample.REQUIRED:
        assert "# Required in production." in entry_of(text, name), name


def test_a_production_app_starts_from_the_sample_with_generated_keys(tmp_path):
    environ = assignments(env_sample.render())
    assert environ["VIGIL_ENV"] == "production"
    for name, command in env_sample.GENERATE.items():
        environ[name] = generated(command)
    # The layout's folders and database are the server's; here, the test's own.
    environ |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.sqlite3'}",
                "VIGIL_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    app = create_app({**config.load(environ), "INSTANCE_PATH": tmp_path})
    try:
        assert app.config["VIGIL_ENV"] == "production"
        assert keys_loaded(app.extensions["vigil.runtime"].keys)
    finally:
        app.extensions["vigil.db"].engine.dispose()


@pytest.fixture
def sample_at(tmp_path, monkeypatch):
    """Point `vigil env-sample` at a file of the test's own; return its path."""
    path = tmp_path / "deploy" / "vigil.env.sample"
    monkeypatch.setattr(env_sample, "PATH", path)
    monkeypatch.setenv("VIGIL_INSTANCE_PATH", str(tmp_path / "instance"))
    return path


def test_env_sample_writes_the_file_and_check_fails_when_it_drifts(sample_at):
    runner = CliRunner()
    missing = runner.invoke(cli, ["env-sample", "--check"])
    assert missing.exit_code != 0 and "out of date" in missing.output

    written = runner.invoke(cli, ["env-sample"])
    assert written.exit_code == 0, written.output
    assert sample_at.read_text() == env_sample.render()
    assert runner.invoke(cli, ["env-sample", "--check"]).exit_code == 0

    sample_at.write_text(sample_at.read_text().replace("# VIGIL_ARGON2_TIME_COST=", "# X="))
    drifted = runner.invoke(cli, ["env-sample", "--check"])
    assert drifted.exit_code != 0 and "vigil env-sample" in drifted.output
