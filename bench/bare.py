"""The bare Flask endpoint that bench/requests.py compares Vigil's requests with."""

from __future__ import annotations

from flask import Flask

bare = Flask("bare")


@bare.get("/")
def hello() -> dict[str, str]:
    """Answer a small JSON object, as cheaply as Flask can."""
    return {"status": "ok"}
