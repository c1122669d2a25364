"""The `vigil` command: database, organisations, users, the demo, and the development server."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup

from backend import create_app, db, demo, schema
from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.errors import VigilError
from backend.runtime import runtime


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False)
def cli() -> None:
    """Run Vigil's administrative commands."""


def _engine():
    return current_app.extensions["vigil.db"].engine


@cli.group("db")
def db_group() -> None:
    """Migrate the database schema (Alembic)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate up to REVISION (default: head)."""
    schema.upgrade(_engine(), revision)
    click.echo(f"database at {schema.current(_engine())}")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate down to REVISION (`base` empties the database)."""
    schema.downgrade(_engine(), revision)
    click.echo(f"database at {schema.current(_engine())}")


@db_group.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    click.echo(schema.current(_engine()) or "empty")


@cli.group("org")
def org_group() -> None:
    """Manage organisations."""


@org_group.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The organisation's name.")
@click.option("--dea", "dea_registration", required=True, help="DEA registration number.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA timezone.")
def org_create(slug: str, name: str, dea_registration: str, timezone: str) -> None:
    """Create organisation SLUG."""
    session = db.session()
    try:
        org = accounts.create_organisation(session, runtime(), slug=slug, name=name,
                                           dea_registration=dea_registration,
                                           timezone=timezone)
    except VigilError as exc:
        raise click.ClickException(exc.message) from exc
    session.commit()
    click.echo(f"created organisation {org.slug} ({org.id})")


@cli.group("user")
def user_group() -> None:
    """Manage users."""


@user_group.command("create")
@click.argument("username")
@click.option("--org", "org_slug", required=True, help="The organisation's slug.")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--display-name", default=None, help="Defaults to USERNAME.")
def user_create(username: str, org_slug: str, role: str, display_name: str | None) -> None:
    """Create USERNAME; the password comes from VIGIL_PASSWORD, else a prompt."""
    password = os.environ.get("VIGIL_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    session = db.session()
    try:
        org = accounts.organisation_by_slug(session, org_slug)
        user = accounts.create_user(session, runtime(), None, organisation_id=org.id,
                                    username=username, display_name=display_name or username,
                                    role=Role(role), password=password)
    except VigilError as exc:
        raise click.ClickException(exc.message) from exc
    session.commit()
    click.echo(f"created {user.role} {user.username} in {org.slug}")


@cli.command("demo")
def demo_command() -> None:
    """Migrate, seed the demo organisation once, and print its logins."""
    schema.upgrade(_engine())
    session = db.session()
    logins = demo.seed(session, runtime(), Path(current_app.instance_path))
    session.commit()
    click.echo(f"demo organisation: {demo.DEMO_SLUG}")
    for username, password in logins.items():
        click.echo(f"  {username:<18} {password}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the API with the development server (use gunicorn in production)."""
    click.echo(f"API docs: http://{host}:{port}/api/v1/docs")
    current_app.run(host=host, port=port, debug=False, use_reloader=False)


def main() -> None:
    """Run the `vigil` command line."""
    cli(prog_name="vigil")
