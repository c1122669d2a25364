"""Add a PHI key to a development instance's key file and make it the active one."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from backend.keys import KEY_FILE


def add_phi_key(instance: Path) -> str:
    """Append a fresh PHI key to the instance key file, make it active, and return its id."""
    path = instance / KEY_FILE
    stored = json.loads(path.read_text())
    existing = {item.partition(":")[0] for item in stored["PHI_KEYS"].split(",")}
    kid = "k" + secrets.token_hex(4)
    while kid in existing:
        kid = "k" + secrets.token_hex(4)
    material = base64.b64encode(secrets.token_bytes(32)).decode()
    stored["PHI_KEYS"] = f"{stored['PHI_KEYS']},{kid}:{material}"
    stored["PHI_ACTIVE_KEY"] = kid
    # Written beside the file and renamed over it, so a crash never leaves half a key file.
    draft = path.with_name(f"{path.name}.new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stored, handle, indent=2)
    os.replace(draft, path)
    return kid
