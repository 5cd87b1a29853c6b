"""The ``gestaltlens`` command: serve the app, migrate the database, manage users, run workers."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from app.cohorts.command import cohort_command, demo_cohort_command
from app.evaluate.command import evaluate_command
from app.evaluate.phenotype_command import phenotype_cli
from app.explain.command import explain_command
from app.gaze.command import gaze_cli
from app.nets.calibrate import model_cli
from app.nets.command import train_command
from app.nets.gallery_command import gallery_cli
from app.nets.import_command import import_command
from app.settings import get_settings
from app.synth.command import synth_command


def with_registrations(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` run after :mod:`app.hooks` (every cross-domain registration, as in the web app): a command that
    creates or ranks cases outside the web process needs the hooks the domains above register — the demo cohort's
    ranking keeps each case's embeddings through matching's run hook. Imported when run, not for ``--help``."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        import app.hooks  # noqa: F401

        command(*args, **kwargs)

    return run


cli = typer.Typer(help="GestaltLens: explainable syndrome ranking from facial photos (research use only).",
                  no_args_is_help=True, add_completion=False)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
user_cli = typer.Typer(help="Accounts and API tokens.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(user_cli, name="user")
cli.add_typer(gaze_cli, name="gaze")  # app/gaze/command.py (issue 12)
cli.add_typer(phenotype_cli, name="phenotype")  # app/evaluate/phenotype_command.py (issue 23)
cli.add_typer(model_cli, name="model")  # app/nets/calibrate.py: `model calibrate` (other model commands join it)
cli.add_typer(gallery_cli, name="gallery")  # app/nets/gallery_command.py (issue 22)
model_cli.command("import")(import_command)  # app/nets/import_command.py: ONNX / pickled GM checkpoints
# Commands whose options live next to their code; both import their heavy modules only when run.
cli.command("synth")(synth_command)
cli.command("train")(train_command)
cli.command("explain")(explain_command)
cli.command("evaluate")(evaluate_command)
cli.command("cohort")(cohort_command)  # app/cohorts/command.py (issue 9)
cli.command("demo-cohort")(with_registrations(demo_cohort_command))


def _sessions():
    from app.migrate import command_sessions

    return command_sessions()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    upgrade: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
) -> None:
    """Serve the web app (and, with the inline runner, its job worker thread)."""
    import uvicorn

    settings = get_settings()
    settings.ensure_dirs()
    if upgrade:
        from app.migrate import upgrade as run_upgrade

        run_upgrade(settings.resolved_database_url)
    typer.echo(f"GestaltLens on http://{host}:{port}  (data: {settings.data_dir}, db: {_safe_url()})")
    from app.web.server import http_protocol

    uvicorn.run("app.web.factory:create_app", factory=True, host=host, port=port, proxy_headers=False,
                http=http_protocol())  # uvicorn's own 400s answer our JSON error with the security headers


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(get_settings().resolved_database_url).render_as_string(hide_password=True)


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply Alembic migrations (the only way the schema is created)."""
    from app.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.resolved_database_url, revision=revision)
    typer.echo(f"database at {revision}: {_safe_url()}")


@user_cli.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin or clinician")] = "clinician",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Create a user. Without --password-stdin the password is asked for interactively."""
    from app.auth import service

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _sessions()() as session:
        try:
            user = service.create_user(session, username=username, password=password, role=role)
        except service.AccountError as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(2) from exc
        from app.audit import service as audit

        audit.record(session, action="user_add", user=None, username="(cli)", detail={"username": user.username})
        session.commit()
        typer.echo(f"created {user.role} {user.username}")


@user_cli.command("token")
def user_token(
    username: str,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
) -> None:
    """Print a new API token for USERNAME (alone on the last line). Store it: it is shown only once."""
    from app.auth import service

    with _sessions()() as session:
        user = service.get_user_by_name(session, username=username)
        if user is None or not user.is_active:
            typer.echo(f"error: no active user {username!r}", err=True)
            raise typer.Exit(2)
        token = service.create_api_token(session, user=user, name=name)
        session.commit()
    typer.echo(f"API token for {username} (send as 'Authorization: Bearer <token>'):", err=True)
    typer.echo(token)


@user_cli.command("list")
def user_list() -> None:
    """List users with their roles."""
    from app.auth import service

    with _sessions()() as session:
        for user in service.list_users(session):
            state = "active" if user.is_active else "disabled"
            typer.echo(f"{user.username}\t{user.role}\t{state}")


@cli.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (one model instance each).")] = 1,
    loglevel: Annotated[str, typer.Option()] = "INFO",
    lanes: Annotated[str, typer.Option(help="Lanes this worker serves: interactive, batch or both (comma-separated); "
                                            "run one worker per lane so batch work never holds a clinician up.")]
    = "interactive,batch",
) -> None:
    """Run a Celery worker against GESTALTLENS_BROKER_URL (for GESTALTLENS_JOB_RUNNER=celery)."""
    # Every registration, as in the web app (app.hooks imports app.tasks: job kinds and the worker context): jobs
    # reach the other domains' hooks too — a demo cohort's ranking keeps each case's embeddings by matching's run
    # hook — so a Celery worker without them would do less than the inline runner does.
    import app.hooks  # noqa: F401
    from app.jobs.celery_app import WORKER_LANES_ENV, make_celery, worker_queues
    from app.jobs.lanes import parse_lanes
    from app.settings import get_settings

    try:
        chosen = parse_lanes(lanes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--lanes") from exc
    queues = ",".join(worker_queues(get_settings(), chosen))
    os.environ[WORKER_LANES_ENV] = ",".join(chosen)  # read by each pool process as it starts
    make_celery().worker_main(["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "--pool=prefork",
                               f"--queues={queues}", f"--hostname={'-'.join(chosen)}@%h"])


def main() -> None:
    """Run the command; a database that is missing its schema or cannot be reached is one line on stderr, not a
    traceback through SQLAlchemy (exit status 2)."""
    from sqlalchemy.exc import OperationalError

    from app.migrate import SchemaNotCurrent

    try:
        cli(standalone_mode=True)
    except SchemaNotCurrent as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OperationalError as exc:
        typer.echo(f"error: the database {_safe_url()} cannot be used: {str(exc.orig).strip().splitlines()[0]}",
                   err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
