"""The server's signing key has an id, can be rotated, and its retired keys still verify."""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from backend import config
from backend.cli import cli
from backend.custody.chain import entry_signed_bytes, sign_entry
from backend.keys import KEY_FILE, KeyConfigError, key_id_of, load_keyring
from tests.backend.test_config import configured_keys


def public_b64(key: Ed25519PrivateKey) -> str:
    """Return the base64 raw public half of `key`."""
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def production_ring(tmp_path, **environ: str):
    """Return the key ring of a production configuration with `environ` added."""
    return load_keyring(config.load({**configured_keys(), "VIGIL_ENV": "production",
                                     **environ}), tmp_path)


def test_a_key_id_is_derived_from_the_public_key(tmp_path):
    ring = production_ring(tmp_path)
    assert ring.signing_key_id == key_id_of(ring.signing_public_key())
    assert len(ring.signing_key_id) == 16
    assert ring.verifying_keys() == {ring.signing_key_id: ring.signing_public_key()}


def test_retired_signing_keys_come_from_the_environment(tmp_path):
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = production_ring(tmp_path, VIGIL_RETIRED_SIGNING_KEYS=(
        f"{public_b64(first)}, {public_b64(second)}"))
    retired = {key_id_of(base64.b64decode(public_b64(key))) for key in (first, second)}
    assert set(ring.retired_signing_keys) == retired
    assert set(ring.verifying_keys()) == retired | {ring.signing_key_id}


@pytest.mark.parametrize(("value", "problem"), [
    pytest.param("not base64!", "not valid base64", id="not-base64"),
    pytest.param(base64.b64encode(b"x" * 31).decode(), "32 bytes", id="short"),
])
def test_malformed_retired_keys_are_refused(tmp_path, value, problem):
    with pytest.raises(KeyConfigError, match=problem):
        production_ring(tmp_path, VIGIL_RETIRED_SIGNING_KEYS=value)


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """Point the command at a development instance folder of its own."""
    monkeypatch.setenv("VIGIL_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    return tmp_path


def vigil(*args: str):
    """Run `vigil ARGS` and return click's result."""
    return CliRunner().invoke(cli, list(args))


def dev_ring(instance):
    """Return the key ring a development app on `instance` would load."""
    return load_keyring(config.load({"VIGIL_ENV": "development"}), instance)


def test_rotating_the_development_key_keeps_what_the_old_one_signed_verifiable(instance):
    before = dev_ring(instance)
    signed = sign_entry(before.signing_key, "ab" * 32)
    rotated = vigil("ledger", "rotate-key")
    assert rotated.exit_code == 0, rotated.output
    assert f"retired signing key {before.signing_key_id}" in rotated.output
    after = dev_ring(instance)
    assert after.signing_key_id != before.signing_key_id
    assert after.retired_signing_keys == {before.signing_key_id: before.signing_public_key()}
    public = after.verifying_keys()[before.signing_key_id]
    Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(signed),
                                                      entry_signed_bytes("ab" * 32))
    assert vigil("ledger", "rotate-key").exit_code == 0
    assert len(dev_ring(instance).retired_signing_keys) == 2
    stored = json.loads((instance / KEY_FILE).read_text())
    assert len(stored["RETIRED_SIGNING_KEYS"].split(",")) == 2


def test_the_keys_command_lists_the_signing_and_retired_keys(instance):
    before = dev_ring(instance)
    assert vigil("ledger", "rotate-key").exit_code == 0
    after = dev_ring(instance)
    listed = vigil("ledger", "keys")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert f"{after.signing_key_id}  signing  {public_b64(after.signing_key)}" in lines
    assert f"{before.signing_key_id}  retired  {public_b64(before.signing_key)}" in lines


def test_a_configured_signing_key_is_rotated_in_the_configuration(instance, monkeypatch):
    private = Ed25519PrivateKey.generate().private_bytes_raw()
    monkeypatch.setenv("VIGIL_SIGNING_KEY", base64.b64encode(private).decode())
    refused = vigil("ledger", "rotate-key")
    assert refused.exit_code != 0
    assert "VIGIL_RETIRED_SIGNING_KEYS" in refused.output
