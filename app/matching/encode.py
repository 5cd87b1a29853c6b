"""Re-encoding cases for a new model version: the embeddings matching needs, from the stored aligned crops.

Runs as the batch job ``matching_encode`` (admin: ``POST /api/v1/matching/encode`` or the gallery page) and
as ``gestaltlens matching encode``. A model version change makes every stored embedding stale (they are
kept per version), so shared cases drop out of rankings until this has run; the gallery page says how
many cases are missing. The work is done in batches: read a batch's crops, close the session, encode, then
write the batch — no connection is held while the network computes, and progress is written per batch.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.matching.service import missing_embeddings, store_embedding
from app.nets.predict import encode_query
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png, inference_lock

BATCH = 16


def encode_missing(sessions: sessionmaker[Session], store: PhotoStore, model: LoadedModel, *,
                   on_progress: Callable[[float], None] | None = None) -> int:
    """Encode every case the served model version has no embedding for; returns how many were encoded."""
    with sessions() as session:
        todo = missing_embeddings(session, model=model)
    done = 0
    for start in range(0, len(todo), BATCH):
        ids = todo[start:start + BATCH]
        with sessions() as session:
            paths = dict(session.execute(select(Case.id, Case.aligned_path).where(Case.id.in_(ids))).all())
        views = {}
        for case_id, path in paths.items():  # a case erased meanwhile is simply not there
            try:
                crop = decode_png(store.read(path))
            except (OSError, ValueError):
                continue
            with inference_lock():
                views[case_id] = encode_query(model, crop)[1]
        with sessions() as session:
            present = set(session.scalars(select(Case.id).where(Case.id.in_(list(views)))))
            for case_id, embedding in views.items():
                if case_id in present:
                    store_embedding(session, case_id=case_id, model=model, views=embedding)
            session.commit()
        done += len(views)
        if on_progress is not None:
            on_progress(min(1.0, (start + len(ids)) / len(todo)))
    return done
