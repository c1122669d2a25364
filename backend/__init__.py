"""Vigil's Flask application factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from backend import (
    api,
    boundary,
    changes,
    config,
    console,
    errors,
    logs,
    metrics,
    security_headers,
    untrusted,
)
from backend.boundary import VigilFlask
from backend.clock import SystemClock
from backend.db import Database
from backend.keys import load_keyring
from backend.metrics import committed
from backend.phi import sealed
from backend.phi.cipher import PhiCipher
from backend.runtime import build_runtime
from backend.sync import sequence


def _blueprints() -> list:
    from backend.accounts.resources import blp as accounts
    from backend.administration.resources import blp as administration
    from backend.administration.resources import patient_blp as trajectory
    from backend.audit.resources import blp as audit
    from backend.auth.resources import blp as auth
    from backend.custody.form_resources import blp as dea
    from backend.custody.form_resources import loss_blp as loss_reports
    from backend.custody.resources import blp as custody
    from backend.devices.resources import blp as devices
    from backend.flags.resources import blp as flags
    from backend.jobs.resources import blp as jobs
    from backend.mfa.policy_resources import blp as security_policy
    from backend.mfa.resources import blp as mfa
    from backend.patients.resources import blp as patients
    from backend.plans.resources import blp as plans
    from backend.policy.resources import blp as policy
    from backend.products.resources import blp as products
    from backend.safeguards_api.resources import blp as safeguards
    from backend.sync.resources import blp as sync
    from backend.visits.resources import blp as visits

    return [auth, accounts, mfa, security_policy, devices, patients, products, plans, visits,
            administration, trajectory, custody, loss_reports, dea, flags, safeguards, policy,
            audit, jobs, sync]


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with `overrides` (tests) taking precedence."""
    overrides = dict(overrides or {})
    instance = Path(overrides.pop("INSTANCE_PATH", None) or config.instance_path())
    clock = overrides.pop("CLOCK", None) or SystemClock()
    # No app-wide /static: the docs page and the console each serve their own files.
    app = VigilFlask("backend", instance_path=str(instance.resolve()), static_folder=None)
    app.config.update(config.load())
    app.config.update(overrides)
    config.validate(app.config)
    instance.mkdir(parents=True, exist_ok=True)
    app.config["CHECKPOINT_DIR"] = Path(app.config["CHECKPOINT_DIR"] or instance / "checkpoints")
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'vigil.sqlite3'}"
    logs.init_app(app)
    keys = load_keyring(app.config, instance)
    app.extensions["vigil.runtime"] = build_runtime(app.config, clock, keys)
    Database(app.config["DATABASE_URL"], clock,
             on_session=[sequence.install, sealed.install, committed.install],
             info={changes.JUDGE: boundary.judge_with(app.extensions["vigil.runtime"]),
                   sealed.PHI: PhiCipher.from_keyring(keys)}
             ).init_app(app)
    errors.init_app(app)
    security_headers.init_app(app)
    untrusted.init_app(app)
    from backend import schema
    from backend.health import resources as health

    health.init_app(app, api.init_app(app, _blueprints()), schema.heads())
    console.init_app(app)
    metrics.init_app(app)
    if app.config["TRUST_PROXY"]:
        # The proxy's X-Forwarded-For is the client's address, its X-Forwarded-Proto whether
        # the client came over TLS (which turns HSTS on).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    return app
