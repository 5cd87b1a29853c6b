"""Comparing a case with a reference: the similarity, and similarity maps on both faces.

A reference is written ``case:<id>`` (another case the user may see), ``gallery:<image id>`` (one gallery
image), ``nearest:<syndrome id>`` (the gallery image that put that syndrome at its rank: the ranking stores
it) or ``centroid:<syndrome id>`` (the syndrome's gallery centroid). Maps are ordinary ``explanations`` rows
whose ``objective`` names the reference, so they are cached, computed by the explain job and erased with
their case like every other map:

* the query side: rows on the query case, objective ``similarity:<kind>:<id>``;
* another case: rows on *that* case, objective ``similarity:case:<query id>`` (its own job);
* a gallery image the generator can re-render: rows stored with the query case, ``subject`` =
  ``gallery:<image id>``, objective ``similarity:case:<query id>``;
* a centroid (an average embedding has no image) or an embeddings-only gallery: query side only, and the
  answer says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases import service as case_service
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.compare.picker import case_by_pseudonym
from app.compare.references import _synth_source, case_embedding
from app.errors import DomainError
from app.explain.fast import EXACT
from app.explain.registry import METHODS, require_methods
from app.explanations.models import Explanation
from app.explanations.service import EXPLAIN_JOB, expected_seconds, explanation_out, is_stuck, params_key
from app.jobs import service as job_service
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png, latest_run

REFERENCE_KINDS = ("case", "gallery", "nearest", "centroid")


@dataclass(frozen=True)
class Reference:
    kind: str  # case | gallery | centroid (nearest resolves to gallery)
    ident: str
    label: str
    syndrome_id: str | None
    other_case: Case | None = None
    other_reason: str = ""  # why the reference side has no maps ("" when it has)

    @property
    def key(self) -> str:
        return f"similarity:{self.kind}:{self.ident}"

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.ident}"


def _label_name(model: LoadedModel, syndrome_id: str) -> str:
    return next((label.name for label in model.labels if label.id == syndrome_id), syndrome_id)


def resolve_reference(session: Session, *, user: User, case: Case, model: LoadedModel, spec: str) -> Reference:
    """Parse and check a reference; NotFound (404) for a case the user may not see, a DomainError (422) otherwise.

    ``case:`` takes a case id or a pseudonym (the newest other case with it)."""
    kind, _, ident = (spec or "").partition(":")
    if kind not in REFERENCE_KINDS or not ident or len(ident) > 120:
        raise DomainError("unknown_reference", "reference must read case:<id>, gallery:<image id>, "
                          "nearest:<syndrome id> or centroid:<syndrome id>")
    gallery = model.gallery
    if kind == "case":
        if re.fullmatch(r"[0-9a-f]{32}", ident):
            other = case_service.get_case(session, user=user, case_id=ident)  # 404 unless the user may see it
        else:  # a pseudonym, as clinicians know their cases
            found = case_by_pseudonym(session, user=user, pseudonym=ident, exclude=case.id)
            if found is None:
                raise DomainError("unknown_reference", f"no other case you may see has the pseudonym {ident!r}")
            other = found
        if other.id == case.id:
            raise DomainError("unknown_reference", "a case compared with itself has similarity 1 everywhere")
        return Reference("case", other.id, _case_label(other), None, other_case=other)
    if gallery is None:
        raise DomainError("unknown_reference", f"model {model.version} has no gallery to compare with")
    if kind == "nearest":
        run = latest_run(session, case_id=case.id)
        if run is None or (run.model_id, run.model_version) != (model.card.id, model.card.version):
            raise DomainError("no_ranking", "The case has no ranking by the served model; rank it first.")
        row = next((r for r in run.ranked or [] if r.get("syndrome_id") == ident), None)
        if row is None or not row.get("image_id"):
            raise DomainError("unknown_reference", f"the ranking names no gallery image for {ident!r}")
        kind, ident = "gallery", str(row["image_id"])
    if kind == "gallery":
        hits = np.flatnonzero(gallery.image_ids == ident)
        if hits.size == 0:
            raise DomainError("unknown_reference", f"gallery image {ident!r} is not in model {model.version}")
        syndrome = str(gallery.labels[int(hits[0])])
        source = _synth_source(model)
        reason = source if isinstance(source, str) else ""
        return Reference("gallery", ident, f"gallery face {ident} ({_label_name(model, syndrome)})", syndrome,
                         other_reason=reason)
    if ident not in set(gallery.labels.tolist()):
        raise DomainError("unknown_reference", f"syndrome {ident!r} has no gallery images in model {model.version}")
    return Reference("centroid", ident, f"centroid of {_label_name(model, ident)}", ident,
                     other_reason="a centroid is an average embedding: it has no face to draw a map on")


def check_methods(methods: Sequence[str] | None) -> list[str]:
    """The requested ids in order without repeats (none: all ten plus the decomposition); the registry refuses
    unknown ones."""
    return require_methods(methods or METHODS)


def _rows(session: Session, *, case: Case, user: User, model: LoadedModel, methods: Sequence[str],
          params: Mapping[str, dict[str, Any]], objective: str, subject: str, target_id: str,
          target_index: int, target_name: str, create: bool) -> tuple[list[Explanation], list[Explanation]]:
    rows: list[Explanation] = []
    pending: list[Explanation] = []
    for method in methods:
        key = params_key(params[method])
        row = session.scalar(select(Explanation).where(
            Explanation.case_id == case.id, Explanation.model_id == model.card.id,
            Explanation.model_version == model.card.version, Explanation.method == method,
            Explanation.target_id == target_id, Explanation.params_key == key,
            Explanation.objective == objective, Explanation.subject == subject, Explanation.mode == EXACT))
        if row is None and create:
            row = Explanation(case_id=case.id, requested_by=user.id, model_id=model.card.id,
                              model_version=model.card.version, method=method, target_id=target_id,
                              target_index=target_index, target_name=target_name, params=params[method],
                              params_key=key, state=QUEUED, objective=objective, subject=subject)
            session.add(row)
            pending.append(row)
        elif row is not None and create and (row.state == FAILED or is_stuck(session, row)):
            row.state, row.error, row.requested_by = QUEUED, None, user.id
            pending.append(row)
        if row is not None:
            rows.append(row)
    return rows, pending


def _case_label(case: Case) -> str:
    return f"case {case.pseudonym or case.id[:8]}"


def _case_name(case: Case, *, on: Case) -> str:
    """How ``case`` is named on the maps stored with case ``on``: by its pseudonym only when one clinician owns
    both. An admin may compare two clinicians' cases; each owner then sees the maps on their own case, and they
    must not learn the other's pseudonym from them."""
    if case.owner_id == on.owner_id:
        return _case_label(case)
    return "another clinician's case"


def _sides(reference: Reference, case: Case, model: LoadedModel) -> list[dict[str, Any]]:
    """(case the rows belong to, objective, subject) of the query side and, if drawn, the reference side."""
    ids = [label.id for label in model.labels]
    syndrome = reference.syndrome_id or "case"
    index = ids.index(syndrome) if syndrome in ids else 0
    other = reference.other_case if reference.kind == "case" else None
    name = _label_name(model, syndrome) if reference.syndrome_id else \
        _case_name(other, on=case) if other is not None else reference.label
    common = {"target_id": syndrome, "target_index": index, "target_name": name[:200]}
    sides = [{"side": "query", "case": case, "objective": reference.key, "subject": "", **common}]
    if other is not None:  # the reference case's maps name the query case (the face they are compared with)
        sides.append({"side": "reference", "case": other, "objective": f"similarity:case:{case.id}",
                      "subject": "", **common, "target_name": _case_name(case, on=other)[:200]})
    elif reference.kind == "gallery" and not reference.other_reason:
        sides.append({"side": "reference", "case": case, "objective": f"similarity:case:{case.id}",
                      "subject": f"gallery:{reference.ident}", **common})
    return sides


def comparison_rows(session: Session, *, user: User, case: Case, model: LoadedModel, reference: Reference,
                    methods: Sequence[str], params: Mapping[str, dict[str, Any]], create: bool = False
                    ) -> tuple[dict[str, list[Explanation]], list[Job]]:
    """Rows of both sides (found, or created when ``create``) and the new jobs (not yet submitted)."""
    out: dict[str, list[Explanation]] = {}
    jobs: dict[str, tuple[Case, list[Explanation]]] = {}
    for side in _sides(reference, case, model):
        rows, pending = _rows(session, case=side["case"], user=user, model=model, methods=methods, params=params,
                              objective=side["objective"], subject=side["subject"], target_id=side["target_id"],
                              target_index=side["target_index"], target_name=side["target_name"], create=create)
        out[side["side"]] = rows
        if pending:
            jobs.setdefault(side["case"].id, (side["case"], []))[1].extend(pending)
    session.flush()
    created = []
    for owner_case, pending in jobs.values():
        job = job_service.create_job(session, kind=EXPLAIN_JOB, owner=user, case_id=owner_case.id,
                                     payload={"explanation_ids": [row.id for row in pending]},
                                     estimated_s=expected_seconds(pending))
        for row in pending:
            row.job_id = job.id
        created.append(job)
    session.flush()
    return out, created


def similarity(store: PhotoStore, *, case: Case, model: LoadedModel, reference: Reference) -> float:
    """Cosine similarity of the query's embedding and the reference (one forward of each face, milliseconds)."""
    query = case_embedding(model, decode_png(store.read(case.aligned_path))).astype(np.float64)
    if reference.kind == "case":
        assert reference.other_case is not None
        other = case_embedding(model, decode_png(store.read(reference.other_case.aligned_path))).astype(np.float64)
    else:
        assert model.gallery is not None
        gallery = model.gallery
        if reference.kind == "gallery":
            other = gallery.embeddings[int(np.flatnonzero(gallery.image_ids == reference.ident)[0])].astype(np.float64)
        else:
            other = gallery.unit[gallery.labels == reference.ident].astype(np.float64).mean(axis=0)
    return float(query @ other / (np.linalg.norm(query) * np.linalg.norm(other)))


def comparison_out(*, case: Case, reference: Reference, rows: dict[str, list[Explanation]], value: float,
                   jobs: Sequence[str]) -> dict[str, Any]:
    """The JSON answer (and the page's data): both faces, the similarity, the maps of each side."""
    other_image = None
    if reference.kind == "case" and reference.other_case is not None:
        other_image = f"/api/v1/cases/{reference.other_case.id}/aligned"
    elif reference.kind == "gallery" and not reference.other_reason:
        other_image = f"/api/v1/gallery/{reference.ident}/aligned.png"
    waiting = [row.job_id for side in rows.values() for row in side if row.state in (QUEUED, RUNNING) and row.job_id]
    return {
        "case_id": case.id,
        "reference": {"spec": reference.spec, "kind": reference.kind, "id": reference.ident, "label": reference.label,
                      "syndrome_id": reference.syndrome_id, "objective": reference.key, "image": other_image,
                      "case_id": reference.other_case.id if reference.other_case else None},
        "similarity": value,
        "query_image": f"/api/v1/cases/{case.id}/aligned",
        "job_ids": list(dict.fromkeys([*jobs, *waiting])),
        "query": [explanation_out(row) for row in rows.get("query", [])],
        "other": [explanation_out(row) for row in rows["reference"]] if "reference" in rows else None,
        "other_reason": reference.other_reason or None,
    }
