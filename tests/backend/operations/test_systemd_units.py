"""The systemd units in deploy/systemd start real entry points of this checkout, read the sample
environment file where docs/operations.md installs it, are hardened alike, stop gracefully, and
pass `systemd-analyze verify` where the machine has it."""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from backend import env_sample
from backend.cli import cli
from backend.config import PROJECT_ROOT
from tests.backend.operations.test_env_sample import assignments

UNITS = PROJECT_ROOT / "deploy" / "systemd"
NAMES = ("vigil-migrate.service", "vigil-web.service", "vigil-scheduler.service")
INSTALL_ROOT = "/opt/vigil"
VENV_BIN = f"{INSTALL_ROOT}/.venv/bin/"
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
HARDENING = {"User": "vigil", "Group": "vigil", "NoNewPrivileges": "yes",
             "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "PrivateDevices": "yes", "UMask": "0077", "CapabilityBoundingSet": ""}


def unit(name: str) -> configparser.ConfigParser:
    """Parse a unit file (a repeated key keeps its last value, as for every key used here)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


def exec_start(name: str) -> list[str]:
    """Return the unit's command line as systemd splits it."""
    return shlex.split(unit(name)["Service"]["ExecStart"])


def console_scripts() -> dict[str, str]:
    """Return the project's console scripts from setup.cfg: name → module:function."""
    setup = configparser.ConfigParser()
    setup.read(PROJECT_ROOT / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def gunicorn_setting(name: str) -> object:
    """Return a literal setting of gunicorn.conf.py, read without running the file."""
    tree = ast.parse((PROJECT_ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def vigil_command(argv: list[str]) -> click.Command:
    """Return the `vigil` subcommand that `argv` (after the program) names."""
    command: click.Command = cli
    for word in argv:
        if not isinstance(command, click.Group):
            break
        found = command.get_command(click.Context(command), word)
        assert found is not None, f"`vigil {' '.join(argv)}`: no command {word!r}"
        command = found
    return command


def test_the_units_are_the_three_expected():
    assert sorted(path.name for path in UNITS.glob("*.service")) == sorted(NAMES)


@pytest.mark.parametrize("name", ["vigil-migrate.service", "vigil-scheduler.service"])
def test_vigil_units_run_a_real_vigil_command(name):
    argv = exec_start(name)
    assert argv[0] == f"{VENV_BIN}vigil"
    module, _, function = console_scripts()["vigil"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    command = vigil_command(argv[1:])
    assert not isinstance(command, click.Group), argv
    assert command.name == {"vigil-migrate.service": "upgrade",
                            "vigil-scheduler.service": "scheduler"}[name]


def test_the_web_unit_runs_gunicorn_with_the_checkout_s_config_and_app():
    service = unit("vigil-web.service")["Service"]
    argv = exec_start("vigil-web.service")
    assert argv[0] == f"{VENV_BIN}gunicorn"
    assert importlib.metadata.entry_points(group="console_scripts", name="gunicorn")
    config = argv[argv.index("-c") + 1]
    assert service["WorkingDirectory"] == INSTALL_ROOT
    assert (PROJECT_ROOT / config).is_file(), "gunicorn's -c is read from WorkingDirectory"
    module, _, factory = argv[-1].partition(":")
    assert factory.endswith("()")
    assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))


@pytest.mark.parametrize("name", NAMES)
def test_each_unit_reads_the_installed_sample_and_may_write_only_vigil_s_folders(name):
    service = unit(name)["Service"]
    assert service["EnvironmentFile"] == env_sample.INSTALLED_AT
    assert service["WorkingDirectory"] == INSTALL_ROOT
    layout = assignments(env_sample.render())
    assert set(service["ReadWritePaths"].split()) == {
        layout["VIGIL_INSTANCE_PATH"], layout["VIGIL_CHECKPOINT_DIR"]}
    assert service["StateDirectory"] == Path(layout["VIGIL_INSTANCE_PATH"]).name
    assert {key: service.get(key) for key in HARDENING} == HARDENING


def test_the_docs_install_the_sample_and_the_units_where_the_units_expect_them():
    guide = OPERATIONS.read_text()
    assert f"deploy/vigil.env.sample {env_sample.INSTALLED_AT}" in guide
    for name in NAMES:
        assert name in guide, name


def test_the_long_running_units_stop_gracefully_and_restart_on_failure():
    web, scheduler = (unit(name)["Service"] for name in NAMES[1:])
    for service in (web, scheduler):
        assert service["KillSignal"] == "SIGTERM"
        assert service["Restart"] == "on-failure"
    # gunicorn's master stops its workers itself, given longer than they may take.
    assert web["KillMode"] == "mixed"
    assert int(web["TimeoutStopSec"]) > gunicorn_setting("graceful_timeout")
    for name in NAMES[1:]:
        after = unit(name)["Unit"]["After"].split()
        assert "vigil-migrate.service" in after, name
    assert unit("vigil-migrate.service")["Service"]["Type"] == "oneshot"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path):
    # The units name the installed paths; here they point at this checkout and its venv.
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "vigil").exists() and (venv_bin / "gunicorn").exists(), venv_bin
    for name in NAMES:
        text = (UNITS / name).read_text().replace(VENV_BIN, f"{venv_bin}/").replace(
            f"WorkingDirectory={INSTALL_ROOT}", f"WorkingDirectory={PROJECT_ROOT}")
        (tmp_path / name).write_text(text)
    verified = subprocess.run(  # noqa: S603 - a fixed command on the test's own files
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in NAMES)],  # noqa: S607
        capture_output=True, text=True, timeout=60)
    complaints = [line for line in verified.stderr.splitlines() if str(tmp_path) in line
                  or any(name in line for name in NAMES)]
    assert verified.returncode == 0 and complaints == [], verified.stderr
