"""``gestaltlens gaze``: participants, synthetic fixation files, imports and results from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

gaze_cli = typer.Typer(help="Eye-tracking and attention data: participants, imports, results.", no_args_is_help=True)

SYNTHETIC_PEOPLE = [("CG01", "clinical_geneticist"), ("CG02", "clinical_geneticist"), ("CG03", "clinical_geneticist"),
                    ("OC01", "other_clinician"), ("NC01", "non_clinician"), ("NC02", "non_clinician"),
                    ("NC03", "non_clinician")]


def _sessions():  # type: ignore[no-untyped-def]
    from app.migrate import command_sessions

    return command_sessions()


def _admin(session, username: str):  # type: ignore[no-untyped-def]
    from app.auth import service

    user = service.get_user_by_name(session, username=username)
    if user is None or not user.is_active or not user.is_admin:
        typer.echo(f"error: {username!r} is not an active admin", err=True)
        raise typer.Exit(2)
    return user


@gaze_cli.command("participant")
def participant(code: str, group: Annotated[str, typer.Option(help="clinical_geneticist, other_clinician, "
                                                              "non_clinician or a lab-defined group")],
                experience: Annotated[float | None, typer.Option(help="years of experience")] = None) -> None:
    """Register a participant by code (never a name)."""
    from app.gaze import service

    with _sessions()() as session:
        try:
            row = service.add_participant(session, code=code, group=group, experience_years=experience)
        except service.GazeError as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(2) from exc
        session.commit()
        typer.echo(f"participant {row.code} ({row.group})")


@gaze_cli.command("synth")
def synth(out: Path, per_case: Annotated[int, typer.Option(help="fixations per participant and case")] = 12,
          seed: int = 0, cases: Annotated[int, typer.Option(help="use the newest N cases")] = 10,
          register: Annotated[bool, typer.Option(help="register the synthetic participants")] = True) -> None:
    """Write SYNTHETIC fixation files in every format for the newest cases (for demos and tests)."""
    from sqlalchemy import select

    from app.cases.models import Case
    from app.gaze import service, synthetic
    from app.gaze.models import Participant

    with _sessions()() as session:
        rows = list(session.scalars(select(Case).order_by(Case.created_at.desc()).limit(cases)))
        if not rows:
            typer.echo("error: no cases in the database (upload some first)", err=True)
            raise typer.Exit(2)
        synth_cases = [synthetic.SynthCase(c.id, c.pseudonym, c.photo_width, c.photo_height, c.align_matrix)
                       for c in reversed(rows)]
        if register:
            for code, group in SYNTHETIC_PEOPLE:
                if session.scalar(select(Participant.id).where(Participant.code == code)) is None:
                    service.add_participant(session, code=code, group=group)
            session.commit()
    files = synthetic.write_all(synth_cases, SYNTHETIC_PEOPLE, per_case=per_case, seed=seed)
    root = out.resolve()
    for name, data in files.items():
        path = (root / name).resolve()
        if not path.is_relative_to(root):  # names are built from ids and constants; this guards the rule
            typer.echo(f"error: {name!r} would lie outside {out}; nothing more written", err=True)
            raise typer.Exit(2)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    rect = ",".join(f"{v:.3f}" for v in synth_cases[0].rect())
    typer.echo(f"wrote {len(files)} SYNTHETIC files to {out}")
    typer.echo(f"EyeLink report: import with --rect {rect}")
    typer.echo("Pupil files (pupil/<participant>/<case id>/): import each with --participant <code> --case <case id>")


@gaze_cli.command("import")
def import_file(path: Path, user: Annotated[str, typer.Option("--as", help="an admin's username")],
                format: Annotated[str | None, typer.Option(help="generic, tobii, eyelink, pupil")] = None,
                space: Annotated[str, typer.Option(help="generic CSV: photo or screen")] = "photo",
                rect: Annotated[str | None, typer.Option(help="left,top,width,height on the screen")] = None,
                participant: Annotated[str | None, typer.Option(help="Pupil Labs: the participant code")] = None,
                case: Annotated[str | None, typer.Option(help="Pupil Labs: the case id or pseudonym")] = None,
                group: Annotated[str | None, typer.Option(help="group for unregistered participants")] = None,
                stimulus_column: Annotated[str, typer.Option(help="EyeLink: the image column")] = "image") -> None:
    """Import one fixation file; prints the report. Nothing is imported when it is refused (exit 2)."""
    from app.gaze import importer, service

    with _sessions()() as session:
        admin = _admin(session, user)
        try:
            options = service.ImportOptions(format=format, space=space, rect=service.parse_rect(rect),
                                            participant=participant, case=case, group=group,
                                            stimulus_column=stimulus_column)
            row = importer.import_fixations(session, data=path.read_bytes(), filename=path.name, options=options,
                                            user=admin, ip=None)
        except service.GazeError as exc:
            session.rollback()
            typer.echo(f"refused ({exc.code}): {exc.detail}", err=True)
            if exc.report:
                typer.echo(json.dumps(exc.report, indent=2), err=True)
            raise typer.Exit(2) from exc
        session.commit()
        typer.echo(json.dumps(row.report, indent=2))


@gaze_cli.command("results")
def results_command(csv: Annotated[Path | None, typer.Option(help="write every number as CSV here")] = None,
                    study: Annotated[str | None, typer.Option(help="one attention study's fixations")] = None,
                    angle: float = 1.0, q: float = 10.0) -> None:
    """Print pooled metrics per method and group (mean [95% CI]) with the ceiling; optionally write the CSV."""
    from app.cases.storage import PhotoStore
    from app.gaze import results
    from app.settings import get_settings

    settings = get_settings()
    with _sessions()() as session:
        result = results.compute(session, store=PhotoStore(settings.photo_dir),
                                 selection=results.Selection(study_id=study, angle_deg=angle, q=q))
    metrics = list(results.METRIC_LABELS)
    typer.echo(f"{result['fixations']} fixations, {result['cases']} cases, groups: {', '.join(result['groups'])}")
    typer.echo("\t".join(["subject", "group", *[results.METRIC_LABELS[m] for m in metrics]]))

    def line(subject: str, group: str, block: dict) -> None:  # type: ignore[type-arg]
        cells = []
        for m in metrics:
            e = block["metrics"][m]
            cells.append("–" if e["mean"] is None else f"{e['mean']:.3f}" + (
                f" [{e['low']:.3f}, {e['high']:.3f}]" if e["low"] is not None else ""))
        typer.echo("\t".join([subject, group, *cells]))

    for method, entry in result["methods"].items():
        for group, block in entry["groups"].items():
            line(method, group, block)
    for group, block in result["ceiling"].items():
        line("ceiling", group, block)
    if csv is not None:
        csv.write_text(results.results_csv(result))
        typer.echo(f"wrote {csv}")
