"""The `vigil` command: database, organisations, users, the demo, and the development server."""

from __future__ import annotations

import base64
import os
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.serving import run_simple

from backend import boundary, create_app, db, demo, env_sample, logs, schema, simulate
from backend.accounts import service as accounts
from backend.accounts.models import Organisation, Role
from backend.custody import checkpoints
from backend.custody.verify import record_verified
from backend.custody.verify import verify as verify_ledger
from backend.errors import VigilError
from backend.jobs import scheduler as job_scheduler
from backend.keys import rotate_signing_key
from backend.metrics.scheduler import SchedulerMetrics
from backend.mfa import policy_service as mfa_policy
from backend.phi import keyfile, rotation
from backend.phi.cipher import PhiCipher
from backend.runtime import runtime
from backend.scan import service as scan
from backend.sync import docs


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False)
def cli() -> None:
    """Run Vigil's administrative commands."""


def _engine():
    return current_app.extensions["vigil.db"].engine


def _unit() -> AbstractContextManager[Session]:
    """Open one unit of work of the command: committed at its end, or rolled back."""
    return boundary.unit(current_app.extensions["vigil.db"].sessions, runtime())


@cli.group("db")
def db_group() -> None:
    """Migrate the database schema (Alembic)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate up to REVISION (default: head)."""
    schema.upgrade(_engine(), revision, PhiCipher.from_keyring(runtime().keys))
    click.echo(f"database at {schema.current(_engine())}")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate down to REVISION (`base` empties the database)."""
    schema.downgrade(_engine(), revision, PhiCipher.from_keyring(runtime().keys))
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
    try:
        with _unit() as session:
            org = accounts.create_organisation(session, runtime(), slug=slug, name=name,
                                               dea_registration=dea_registration,
                                               timezone=timezone)
    except VigilError as exc:
        raise click.ClickException(exc.message) from exc
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
    try:
        with _unit() as session:
            org = accounts.organisation_by_slug(session, org_slug)
            user = accounts.create_user(session, runtime(), None, organisation_id=org.id,
                                        username=username, display_name=display_name or username,
                                        role=Role(role), password=password)
    except VigilError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created {user.role} {user.username} in {org.slug}")


@user_group.command("no-factor")
@click.option("--org", "org_slug", default=None, help="Only this organisation (default: all).")
def user_no_factor(org_slug: str | None) -> None:
    """Print the active users who need a second factor and have none confirmed (desk roles, and
    nurses where the organisation asks them for one), with when each is due."""
    missing = 0
    with _unit() as session:
        for org in _organisations(session, org_slug):
            for row in mfa_policy.unenrolled(session, org, runtime().clock.now()):
                missing += 1
                user, due = row.user, row.due_at.astimezone(UTC)
                click.echo(f"{org.slug}  {user.role.value:<10}  {user.username}  "
                           f"({user.display_name})  {'overdue since' if row.overdue else 'due'} "
                           f"{due:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{missing} user(s) without a confirmed second factor")


@cli.command("demo")
def demo_command() -> None:
    """Migrate, seed the demo organisation once, and print its logins."""
    schema.upgrade(_engine())
    with _unit() as session:
        logins = demo.seed(session, runtime(), Path(current_app.instance_path))
    click.echo(f"demo organisation: {demo.DEMO_SLUG}")
    for username, password in logins.items():
        click.echo(f"  {username:<18} {password}")


def _write_or_check(path: Path, text: str, command: str, check: bool) -> None:
    """Write a generated file, or with check fail when the file on disk differs."""
    if check:
        if not path.exists() or path.read_text() != text:
            raise click.ClickException(f"{path} is out of date: run `{command}`")
        click.echo(f"{path} is current")
        return
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {path}")


@cli.command("sync-docs")
@click.option("--check", is_flag=True, help="Fail if docs/sync.md differs from the tables.")
def sync_docs(check: bool) -> None:
    """Write docs/sync.md, the phone-side schema, from the synced tables."""
    _write_or_check(docs.PATH, docs.render(), "vigil sync-docs", check)


@cli.command("env-sample")
@click.option("--check", is_flag=True, help="Fail if the sample differs from the settings.")
def env_sample_command(check: bool) -> None:
    """Write deploy/vigil.env.sample, every setting with its doc, from backend/config.py."""
    _write_or_check(env_sample.PATH, env_sample.render(), "vigil env-sample", check)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the API with the development server (use gunicorn in production)."""
    click.echo(f"API docs: http://{host}:{port}/api/v1/docs")
    # Flask ignores app.run() under its own CLI, so serve through werkzeug directly.
    # Without werkzeug's access line, which shows the raw path and query: the app logs each
    # request by its route.
    run_simple(host, port, current_app._get_current_object(), threaded=True,
               request_handler=logs.QuietRequestHandler)


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
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve this scheduler's Prometheus metrics at /metrics on PORT.")
@click.option("--metrics-address", default="127.0.0.1", show_default=True,
              help="The address the metrics port listens on.")
def scheduler_command(periods: dict[str, int], retry_seconds: float, lease_seconds: float,
                      run_for: float | None, metrics_port: int | None,
                      metrics_address: str) -> None:
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
    listener = None
    if metrics_port is not None:
        metrics = SchedulerMetrics(lock.held, [spec.name for spec in schedule])
        metrics.serve(metrics_address, metrics_port)
        listener = metrics.heard
    job_scheduler.run(database.sessions, rt, lock, holder, schedule,
                      retry_seconds=retry_seconds, run_for=run_for, listener=listener)


@cli.group("keys")
def keys_group() -> None:
    """Rotate the PHI encryption keys, and see which key encrypts how many values."""


@keys_group.command("status")
def keys_status() -> None:
    """Print the values per key id per column, and which keys can be retired."""
    keys = runtime().keys
    counts = rotation.key_counts(db.session())
    for count in counts:
        click.echo(f"{count.table}.{count.column:<24} {count.key_id:<16} {count.values:>9}")
    click.echo(f"active key: {keys.phi_active}")
    for kid in rotation.unused_key_ids(counts, keys):
        click.echo(f"key {kid}: 0 values; it can be removed from VIGIL_PHI_KEYS")
    for kid in rotation.unknown_key_ids(counts, keys):
        click.echo(f"key {kid!r}: NOT CONFIGURED; its values cannot be read")


@keys_group.command("rotate")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Rows re-encrypted per committed transaction.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Stop after this many batches; run again to resume.")
@click.option("--pause", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to wait between batches, to spare a busy database.")
def keys_rotate(batch_size: int, max_batches: int | None, pause: float) -> None:
    """Re-encrypt every PHI value under the active key, one committed batch at a time."""
    rt = runtime()
    with _unit() as session:
        unknown = rotation.unknown_key_ids(rotation.key_counts(session), rt.keys)
    if unknown:
        raise click.ClickException(
            "stored values name key ids that are not configured: "
            f"{', '.join(map(repr, unknown))}; add them to VIGIL_PHI_KEYS before rotating")
    batches = 0
    while max_batches is None or batches < max_batches:
        try:
            with _unit() as batch:
                moved = rotation.rotate_batch(batch, rt, batch_size)
        except VigilError as exc:
            raise click.ClickException(exc.message) from exc
        if not moved:
            break
        batches += 1
        click.echo(f"batch {batches}: {moved} values re-encrypted under {rt.keys.phi_active}")
        time.sleep(pause)
    with _unit() as session:
        remaining = rotation.stale_count(session, rt.keys)
    click.echo(f"{remaining} rows still hold values under older keys; run again to continue"
               if remaining else f"every value is under key {rt.keys.phi_active}")


@keys_group.command("add")
def keys_add() -> None:
    """Add a fresh PHI key to the development key file and make it active."""
    if current_app.config["VIGIL_ENV"] == "production":
        raise click.ClickException("refused in production: add the key to VIGIL_PHI_KEYS "
                                   "and name it in VIGIL_PHI_ACTIVE_KEY")
    if current_app.config["PHI_KEYS"]:
        raise click.ClickException("the PHI keys come from VIGIL_PHI_KEYS: add the key there "
                                   "and name it in VIGIL_PHI_ACTIVE_KEY")
    kid = keyfile.add_phi_key(Path(current_app.instance_path))
    click.echo(f"added PHI key {kid} and made it active; restart the server, "
               "then run `vigil keys rotate`")


@cli.group("ledger")
def ledger_group() -> None:
    """Verify the custody ledger's chains and sign their heads."""


def _organisations(session: Session, slug: str | None) -> list[Organisation]:
    if slug is None:
        return list(session.scalars(select(Organisation).order_by(Organisation.slug)))
    try:
        return [accounts.organisation_by_slug(session, slug)]
    except VigilError as exc:
        raise click.ClickException(exc.message) from exc


@ledger_group.command("verify")
@click.option("--org", "org_slug", default=None, help="Only this organisation (default: all).")
@click.option("--incremental", is_flag=True,
              help="Start after the checkpoint the last passing verify reached (default: the "
                   "whole chain).")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default="the number of cores",
              help="Processes walking stretches of a chain at once (PostgreSQL).")
def ledger_verify(org_slug: str | None, incremental: bool, workers: int) -> None:
    """Recompute each chain and check its signatures, checkpoints and balances."""
    rt = runtime()
    failed = 0
    with _unit() as session:
        orgs = [(org.id, org.slug) for org in _organisations(session, org_slug)]
    for organisation_id, slug in orgs:
        # A unit per organisation: how far each verified is kept even if a later one fails.
        with _unit() as session:
            report = verify_ledger(session, organisation_id, rt.keys.verifying_keys(),
                                   current_app.config["CHECKPOINT_DIR"], workers=workers,
                                   incremental=incremental)
            record_verified(session, rt.clock.now(), report)
        checked = f"{report.entries} entries, {report.checkpoints} checkpoints"
        if report.since:
            checked += f", walked from seq {report.since + 1}"
        if report.ok:
            click.echo(f"{slug}: {checked} checked, OK")
            continue
        failed += 1
        where = "balances" if report.problem.seq is None else f"seq {report.problem.seq}"
        click.echo(f"{slug}: FAILED at {where}: {report.problem.message} ({checked} read)")
    if failed:
        raise click.ClickException(f"{failed} organisation(s) failed verification")


@ledger_group.command("checkpoint")
@click.option("--org", "org_slug", default=None, help="Only this organisation (default: all).")
def ledger_checkpoint(org_slug: str | None) -> None:
    """Sign the chain heads that moved since their last checkpoint, now."""
    rt = runtime()
    export_dir = current_app.config["CHECKPOINT_DIR"]
    signed = 0
    with _unit() as session:
        for org in _organisations(session, org_slug):
            checkpoint = checkpoints.sign_head(session, rt, org.id, export_dir)
            if checkpoint is not None:
                signed += 1
                click.echo(f"{org.slug}: signed seq {checkpoint.seq} ({checkpoint.head_hash})")
    click.echo(f"{signed} checkpoint(s) signed; exported to {export_dir}")


@ledger_group.command("keys")
def ledger_keys() -> None:
    """Print the server's signing key and the retired keys whose signatures still verify."""
    keys = runtime().keys
    for kid, public_key in keys.verifying_keys().items():
        state = "signing" if kid == keys.signing_key_id else "retired"
        click.echo(f"{kid}  {state:<8} {base64.b64encode(public_key).decode()}")


@ledger_group.command("rotate-key")
def ledger_rotate_key() -> None:
    """Give the development instance a new signing key; the old one's signatures still verify."""
    if current_app.config["VIGIL_ENV"] == "production" or current_app.config["SIGNING_KEY"]:
        raise click.ClickException(
            "the signing key comes from VIGIL_SIGNING_KEY: set it to the new key and add the "
            "old public key (`vigil ledger keys`) to VIGIL_RETIRED_SIGNING_KEYS")
    retired, fresh = rotate_signing_key(Path(current_app.instance_path))
    click.echo(f"retired signing key {retired} (its signatures still verify); new key {fresh}; "
               "restart the server and the scheduler")


@cli.command("scan")
@click.option("--org", "org_slug", default=None, help="Only this organisation (default: all).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              default=None, help="Scan facts from this UTC date or time (default: the policy's "
                                 "scan_window_days back).")
def scan_command(org_slug: str | None, since: datetime | None) -> None:
    """Run every safeguard rule over the population and raise flags for what they find."""
    rt = runtime()
    start = since.replace(tzinfo=UTC) if since else None
    with _unit() as session:
        organisations = _organisations(session, org_slug)
    for org in organisations:
        with _unit() as session:
            result = scan.scan_organisation(session, rt, org.id, start)
        read = ", ".join(f"{count} {name}" for name, count in result.facts.items() if count)
        took = ", ".join(f"{name} {seconds} s" for name, seconds in result.seconds.items())
        click.echo(f"{org.slug}: since {result.since:%Y-%m-%d %H:%M}, read {read or 'nothing'}")
        click.echo(f"  {result.findings} finding(s), {result.new_flags} new flag(s); {took}")
        for rule_id, count in sorted(result.by_rule.items()):
            click.echo(f"  {rule_id}: {count}")


@cli.command("simulate")
@click.option("--org", "org_slug", required=True,
              help="Slug of the organisation to create (with --report: to score).")
@click.option("--nurses", type=click.IntRange(min=7), default=40, show_default=True)
@click.option("--patients", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--days", type=click.IntRange(min=7), default=180, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--report", "report_only", is_flag=True,
              help="Score the flags of an earlier simulation against its ground truth.")
def simulate_command(org_slug: str, nurses: int, patients: int, days: int, seed: int,
                     report_only: bool) -> None:
    """Simulate an organisation with injected misuse and its ground truth, or score it."""
    instance = Path(current_app.instance_path)
    try:
        if report_only:
            click.echo(simulate.report(db.session(), instance, org_slug))
            return
        truth = simulate.generate(current_app.extensions["vigil.db"].sessions, runtime(),
                                  instance, simulate.Params(org_slug, nurses, patients, days,
                                                            seed), progress=click.echo)
    except (VigilError, FileNotFoundError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc
    click.echo(f"simulated {org_slug} in {truth.generation_seconds} s: "
               + ", ".join(f"{count} {name}" for name, count in truth.counts.items()))
    click.echo(f"ground truth: {simulate.truth_path(instance, org_slug)}; "
               f"score it with `vigil simulate --report --org {org_slug}`")


def main() -> None:
    """Run the `vigil` command line."""
    cli(prog_name="vigil")
