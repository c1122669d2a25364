"""The `vigil` command: database, organisations, users, the demo, and the development server."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup
from werkzeug.serving import run_simple

from backend import create_app, db, demo, schema
from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.errors import VigilError
from backend.jobs import scheduler as job_scheduler
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
    # Flask ignores app.run() under its own CLI, so serve through werkzeug directly.
    run_simple(host, port, current_app._get_current_object(), threaded=True)


def _job_periods(_ctx: click.Context, _param: click.Parameter,
                 values: tuple[str, ...]) -> dict[str, int]:
    try:
        return {name: int(seconds) for name, _, seconds in (v.partition("=") for v in values)}
    except ValueError:
        raise click.BadParameter("use JOB=SECONDS, e.g. heartbeat=60") from None


@cli.command("scheduler")
@click.option("--every", "periods", multiple=True, metavar="JOB=SECONDS",
              callback=_job_periods, help="Run JOB every SECONDS instead of its default.")
@click.option("--retry-seconds", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, help="How often a standby tries the lock and the active renews.")
@click.option("--lease-seconds", type=click.FloatRange(min=1), default=30.0,
              show_default=True, help="How long the SQLite lease lasts unless renewed.")
@click.option("--run-for", type=click.FloatRange(min=0.1), default=None,
              help="Stop after SECONDS (default: until SIGTERM or Ctrl-C).")
def scheduler_command(periods: dict[str, int], retry_seconds: float, lease_seconds: float,
                      run_for: float | None) -> None:
    """Run the scheduled jobs; however many run, only one is active at a time."""
    try:
        schedule = job_scheduler.with_periods(job_scheduler.SCHEDULE, periods)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from exc
    if lease_seconds <= 2 * retry_seconds:
        raise click.BadParameter("must exceed twice --retry-seconds, so a renewal can fail once",
                                 param_hint="--lease-seconds")
    database, rt = current_app.extensions["vigil.db"], runtime()
    holder = job_scheduler.holder_id()
    lock = job_scheduler.lock_for(database, rt.clock, holder, lease_seconds)
    click.echo(f"scheduler {holder} started; jobs: "
               + ", ".join(f"{spec.name} every {spec.seconds} s" for spec in schedule))
    job_scheduler.run(database.sessions, rt, lock, holder, schedule,
                      retry_seconds=retry_seconds, run_for=run_for)


def main() -> None:
    """Run the `vigil` command line."""
    cli(prog_name="vigil")
