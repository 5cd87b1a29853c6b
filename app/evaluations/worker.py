"""The "evaluate" job: compute one scorecard (app.evaluate) for the served model and store it."""

from __future__ import annotations

from app.db import utcnow
from app.evaluate.command import EvaluationSpec, run_evaluation
from app.evaluations.models import Evaluation
from app.jobs import service as job_service
from app.jobs.models import DONE, FAILED, RUNNING, Job
from app.jobs.registry import WorkerContext, fail_unfinished, handler


@handler("evaluate", on_failure=fail_unfinished(Evaluation))
def run_evaluate(job: Job, context: WorkerContext) -> None:
    with context.sessions() as session:
        row = session.get(Evaluation, job.payload.get("evaluation_id"))
        if row is None or row.state in (DONE, FAILED):
            return
        row.state = RUNNING
        session.commit()
        row_id, wanted, spec = row.id, (row.model_id, row.model_version), EvaluationSpec.from_dict(dict(row.spec))
    model = context.model()
    if (model.card.id, model.card.version) != wanted:
        raise RuntimeError(f"the evaluation was asked of {wanted[0]}@{wanted[1]} but this worker serves "
                           f"{model.version}; ask again")
    write_progress = job_service.progress_writer(context.sessions, job.id, job.worker)
    result = run_evaluation(model.network, [label.id for label in model.labels], model.card.gradcam_layer, spec,
                            lambda fraction, message: write_progress(fraction))
    result["model"] = {"id": model.card.id, "version": model.card.version}
    with context.sessions() as session:
        row = session.get(Evaluation, row_id)
        if row is not None:
            row.result, row.state, row.error, row.finished_at = result, DONE, None, utcnow()
            session.commit()
