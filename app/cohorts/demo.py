"""The demo cohort: generated synthetic patients imported as cases with confirmed diagnoses.

A fresh install has no cases, so the Syndromes and Compare pages would be empty. :func:`import_demo_cohort`
(the service function a first-run page can call; the CLI is ``gestaltlens demo-cohort USERNAME``) renders
``per_syndrome`` faces of every synthetic class (the syndromes and ``unaffected``) with :mod:`app.synth`
(deterministic from ``seed``; a seed
other than the demo model's training seed 0, so none of them is a gallery image), runs each through the real
intake (detection, alignment), stores it as a case owned by ``owner``, ranks it with the served model and
confirms its true synthetic syndrome as the diagnosis.

Every imported case is clearly marked synthetic: its pseudonym reads ``SYNTHETIC <syndrome> #<n>``, and no real
person is depicted. Each face is its own patient (distinct pseudonyms), so 5 per syndrome meet the floor.
Importing again skips faces whose pseudonym the owner already has, so the command is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases import service as case_service
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.diagnoses import service as diagnosis_service
from app.nets.registry import LoadedModel

DEMO_SEED = 2027
PSEUDONYM = "SYNTHETIC {syndrome} #{index}"


@dataclass(frozen=True)
class ImportSummary:
    created: int
    skipped: int
    per_syndrome: dict[str, int]


def import_demo_cohort(session: Session, *, owner: User, store: PhotoStore, model: LoadedModel,
                       per_syndrome: int = 6, seed: int = DEMO_SEED, syndromes: Sequence[str] | None = None,
                       on_progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Create the synthetic cases (committing after each); returns what was created and skipped.

    ``syndromes`` limits the import to these synthetic syndromes (default: every one the model knows).
    """
    from app.predictions.service import rank_crop, store_run
    from app.synth.classes import CLASSES
    from app.synth.generate import generate_one
    from app.vision.pipeline import process_photo

    if per_syndrome < 1:
        raise ValueError("per_syndrome must be at least 1")
    known = {label.id for label in model.labels}
    # every class the model knows, unaffected included: the Syndromes page compares each syndrome with unaffected
    # faces, which need the floor of 5 patients like any group (issue 24.9: the demo made 48 of 54 promised faces)
    syndromes = [c.id for c in CLASSES if c.id in known and (syndromes is None or c.id in syndromes)]
    if not syndromes:
        raise ValueError(f"model {model.version} knows none of the synthetic syndromes; the demo cohort needs the "
                         "demo model")
    existing = set(session.scalars(select(Case.pseudonym).where(Case.owner_id == owner.id)))
    created = skipped = 0
    counts: dict[str, int] = {}
    total, done = len(syndromes) * per_syndrome, 0
    for syndrome in syndromes:
        for index in range(per_syndrome):
            pseudonym = PSEUDONYM.format(syndrome=syndrome, index=index + 1)
            done += 1
            if pseudonym in existing:
                skipped += 1
            else:
                face = generate_one(seed, syndrome, index)
                processed = process_photo(face.jpeg, most_confident=True)
                case = case_service.create_case(session, owner=owner, processed=processed, pseudonym=pseudonym,
                                                store=store)
                store_run(session, case=case, model=model, result=rank_crop(model, processed.aligned.crop))
                diagnosis_service.confirm_label(session, case=case, user=owner, labels=model.labels,
                                                model_version=model.version, syndrome_id=syndrome)
                session.commit()
                created += 1
                counts[syndrome] = counts.get(syndrome, 0) + 1
            if on_progress is not None:
                on_progress(done, total)
    return ImportSummary(created=created, skipped=skipped, per_syndrome=counts)
