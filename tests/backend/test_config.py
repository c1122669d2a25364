"""Configuration is read from the environment in one place, and keys are never left to chance."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from backend import config, create_app
from backend.keys import KEY_FILE, KeyConfigError, load_keyring

KEY_ENVS = ("VIGIL_SECRET_KEY", "VIGIL_SIGNING_KEY", "VIGIL_PHI_KEYS", "VIGIL_BLIND_INDEX_KEY")


def fresh_key(size: int = 32) -> str:
    """Return `size` random bytes, base64-encoded."""
    return base64.b64encode(secrets.token_bytes(size)).decode()


def configured_keys() -> dict[str, str]:
    """Return a complete, valid set of key settings as their environment variables."""
    return {"VIGIL_SECRET_KEY": fresh_key(), "VIGIL_SIGNING_KEY": fresh_key(),
            "VIGIL_PHI_KEYS": f"old:{fresh_key()},new:{fresh_key()}",
            "VIGIL_PHI_ACTIVE_KEY": "new", "VIGIL_BLIND_INDEX_KEY": fresh_key(48)}


@pytest.fixture
def build(tmp_path):
    """Return a factory of apps on `tmp_path`; dispose their engines afterwards."""
    apps = []

    def factory(**overrides):
        app = create_app({"INSTANCE_PATH": tmp_path, **overrides})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["vigil.db"].engine.dispose()


def keyring(app):
    """Return the key ring `app` runs with."""
    return app.extensions["vigil.runtime"].keys


def test_production_without_keys_refuses_to_start(build, tmp_path):
    with pytest.raises(KeyConfigError) as refused:
        build(VIGIL_ENV="production")
    for name in KEY_ENVS:
        assert name in str(refused.value)
    assert not (tmp_path / KEY_FILE).exists()


def test_production_names_only_the_missing_keys(build, monkeypatch):
    keys = configured_keys()
    monkeypatch.setenv("VIGIL_SECRET_KEY", keys["VIGIL_SECRET_KEY"])
    monkeypatch.setenv("VIGIL_SIGNING_KEY", keys["VIGIL_SIGNING_KEY"])
    with pytest.raises(KeyConfigError) as refused:
        build(VIGIL_ENV="production")
    message = str(refused.value)
    assert "VIGIL_PHI_KEYS" in message
    assert "VIGIL_BLIND_INDEX_KEY" in message
    assert "VIGIL_SECRET_KEY" not in message
    assert "VIGIL_SIGNING_KEY" not in message


def test_development_generates_private_keys_once(build, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="backend.keys"):
        first = build(VIGIL_ENV="development")
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file) in caplog.text
    assert set(json.loads(key_file.read_text())) >= {
        "SECRET_KEY", "SIGNING_KEY", "PHI_KEYS", "PHI_ACTIVE_KEY", "BLIND_INDEX_KEY"}

    caplog.clear()
    second = build(VIGIL_ENV="development")
    assert keyring(second).signing_public_key() == keyring(first).signing_public_key()
    assert keyring(second).token_secret == keyring(first).token_secret
    assert keyring(second).phi_keys == keyring(first).phi_keys
    assert "generated development keys" not in caplog.text


def test_configured_keys_come_from_the_environment(build, tmp_path, monkeypatch):
    keys = configured_keys()
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    ring = keyring(build(VIGIL_ENV="production"))
    signing = Ed25519PrivateKey.from_private_bytes(base64.b64decode(keys["VIGIL_SIGNING_KEY"]))
    assert ring.signing_public_key() == signing.public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    assert ring.token_secret == base64.b64decode(keys["VIGIL_SECRET_KEY"])
    assert ring.blind_index_key == base64.b64decode(keys["VIGIL_BLIND_INDEX_KEY"])
    assert set(ring.phi_keys) == {"old", "new"}
    assert ring.phi_active == "new"
    assert not (tmp_path / KEY_FILE).exists()


def test_first_phi_key_is_active_by_default(tmp_path):
    keys = {**configured_keys(), "VIGIL_PHI_ACTIVE_KEY": ""}
    ring = load_keyring(config.load({**keys, "VIGIL_ENV": "production"}), tmp_path)
    assert ring.phi_active == "old"


def test_configured_keys_win_over_the_development_key_file(build, monkeypatch):
    generated = keyring(build(VIGIL_ENV="development"))
    secret = fresh_key()
    monkeypatch.setenv("VIGIL_SECRET_KEY", secret)
    ring = keyring(build(VIGIL_ENV="development"))
    assert ring.token_secret == base64.b64decode(secret)
    assert ring.signing_public_key() == generated.signing_public_key()


@pytest.mark.parametrize(("phi_keys", "active", "problem"), [
    pytest.param("no-separator", "", "kid:base64key", id="no-separator"),
    pytest.param(f":{fresh_key()}", "", "kid:base64key", id="empty-kid"),
    pytest.param("k1:not base64!", "", "not valid base64", id="not-base64"),
    pytest.param(f"k1:{fresh_key(16)}", "", "32 bytes", id="short-key"),
    pytest.param(f"k1:{fresh_key()},k2", "", "kid:base64key", id="second-entry-bare"),
    pytest.param(f"k1:{fresh_key()}", "k2", "not in VIGIL_PHI_KEYS", id="unknown-active"),
])
def test_malformed_phi_keys_are_refused(tmp_path, phi_keys, active, problem):
    keys = {**configured_keys(), "VIGIL_PHI_KEYS": phi_keys, "VIGIL_PHI_ACTIVE_KEY": active}
    with pytest.raises(KeyConfigError, match=problem):
        load_keyring(config.load({**keys, "VIGIL_ENV": "production"}), tmp_path)


@pytest.mark.parametrize(("name", "value", "problem"), [
    pytest.param("VIGIL_SECRET_KEY", fresh_key(16), "at least 32 bytes", id="short-secret"),
    pytest.param("VIGIL_SIGNING_KEY", fresh_key(64), "32 bytes", id="long-signing-key"),
    pytest.param("VIGIL_BLIND_INDEX_KEY", "%%%", "not valid base64", id="bad-blind-index"),
])
def test_malformed_keys_are_refused(tmp_path, name, value, problem):
    keys = {**configured_keys(), name: value}
    with pytest.raises(KeyConfigError, match=problem):
        load_keyring(config.load({**keys, "VIGIL_ENV": "production"}), tmp_path)


@pytest.mark.parametrize("seconds", [901, 3600, 0, -1])
def test_access_token_lifetime_outside_limits_is_refused(seconds):
    settings = config.load({"VIGIL_ACCESS_TOKEN_SECONDS": str(seconds)})
    with pytest.raises(ValueError, match="VIGIL_ACCESS_TOKEN_SECONDS"):
        config.validate(settings)


def test_access_token_lifetime_of_fifteen_minutes_is_accepted():
    config.validate(config.load({"VIGIL_ACCESS_TOKEN_SECONDS": "900"}))


def test_create_app_refuses_long_access_tokens(build, monkeypatch):
    monkeypatch.setenv("VIGIL_ACCESS_TOKEN_SECONDS", "901")
    with pytest.raises(ValueError, match="VIGIL_ACCESS_TOKEN_SECONDS"):
        build(VIGIL_ENV="test")
    with pytest.raises(ValueError, match="VIGIL_ACCESS_TOKEN_SECONDS"):
        build(VIGIL_ENV="test", ACCESS_TOKEN_SECONDS=901)


def test_unknown_environment_is_refused():
    with pytest.raises(ValueError, match="VIGIL_ENV"):
        config.validate(config.load({"VIGIL_ENV": "staging"}))


def test_load_types_and_defaults_settings():
    settings = config.load({"VIGIL_MAX_REQUEST_BYTES": "2048", "VIGIL_TRUST_PROXY": "yes",
                            "VIGIL_LOGIN_MAX_PER_ACCOUNT": ""})
    assert settings["MAX_CONTENT_LENGTH"] == 2048
    assert settings["TRUST_PROXY"] is True
    assert settings["LOGIN_MAX_PER_ACCOUNT"] == 5
    assert settings["VIGIL_ENV"] == "development"
    assert settings["ACCESS_TOKEN_SECONDS"] == 900
    assert settings["DATABASE_URL"] is None


def test_overrides_win_over_the_environment(build, monkeypatch):
    monkeypatch.setenv("VIGIL_ACCESS_TOKEN_SECONDS", "600")
    assert build(VIGIL_ENV="test").config["ACCESS_TOKEN_SECONDS"] == 600
    assert build(VIGIL_ENV="test", ACCESS_TOKEN_SECONDS=300).config["ACCESS_TOKEN_SECONDS"] == 300


def test_database_defaults_to_sqlite_in_the_instance_folder(build, tmp_path):
    app = build(VIGIL_ENV="test")
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'vigil.sqlite3'}"
    assert app.extensions["vigil.db"].engine.url.database == str(tmp_path / "vigil.sqlite3")


def test_database_url_comes_from_the_environment(build, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert build(VIGIL_ENV="test").config["DATABASE_URL"] == url


def test_instance_path_defaults_to_the_project():
    assert config.instance_path({}) == config.PROJECT_ROOT / "instance"
    assert config.instance_path({"VIGIL_INSTANCE_PATH": ""}) == config.PROJECT_ROOT / "instance"


def test_instance_path_comes_from_the_environment(tmp_path):
    moved = tmp_path / "moved"
    assert config.instance_path({"VIGIL_INSTANCE_PATH": str(moved)}) == moved.resolve()


def test_create_app_uses_the_moved_instance_folder(tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    monkeypatch.setenv("VIGIL_INSTANCE_PATH", str(moved))
    app = create_app({"VIGIL_ENV": "development"})
    app.extensions["vigil.db"].engine.dispose()
    assert app.instance_path == str(moved.resolve())
    assert (moved / KEY_FILE).exists()
    assert app.config["DATABASE_URL"] == f"sqlite:///{moved.resolve() / 'vigil.sqlite3'}"
