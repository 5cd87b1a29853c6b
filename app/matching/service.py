"""Sharing confirmed cases for matching, the living gallery, similar patients and matches.

* **Sharing** is an explicit choice on a case with a confirmed diagnosis, recorded (``match_shares``),
  revocable and audited (``share_for_matching`` / ``unshare_for_matching``, without the diagnosis).
  A share counts only while the diagnosis stays confirmed (an unconfirmed face must not pose as a known
  syndrome); changing the diagnosis moves the face to the new syndrome.
* **Embeddings** of every ranked case are stored per model version (a run hook of the predictions domain),
  so matching never re-encodes at request time; ``gestaltlens matching encode`` fills in the cases a new
  model version has not ranked yet.
* **The living gallery**: the shared cases' embeddings for the served model version, as a second gallery
  beside the model's file. A diagnosis maps onto a syndrome of the model by its label id, else by its
  OMIM id; a syndrome the model does not know becomes a syndrome of its own (``OMIM:123456`` or the
  confirmed name), so an ultra-rare disorder known only from confirmed cases still ranks.
* **Privacy**: a case the user may not see (someone else's, for a non-admin) is never named: it appears
  as "a confirmed case at this site" with syndrome and distance, without id, photo or pseudonym.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.diagnoses.models import Diagnosis
from app.diagnoses.service import current_diagnoses, current_diagnosis
from app.errors import DomainError
from app.matching.models import CaseEmbedding, MatchShare
from app.nets.card import Label
from app.nets.gallery import build_gallery
from app.nets.registry import LoadedModel
from app.nets.search import NearestIndex
from app.predictions.references import References
from app.predictions.service import out_of_range_for

ANONYMOUS = "a confirmed case at this site"


class MatchingError(DomainError):
    """A matching request that cannot be done (422)."""


# ---------------------------------------------------------------- embeddings

def store_embedding(session: Session, *, case_id: str, model: LoadedModel, views: np.ndarray) -> None:
    """Keep the case's (V, 512) embedding for this model version (replacing an older one of the same version)."""
    views = np.ascontiguousarray(np.asarray(views, dtype=np.float32))
    row = session.scalar(select(CaseEmbedding).where(
        CaseEmbedding.case_id == case_id, CaseEmbedding.model_id == model.card.id,
        CaseEmbedding.model_version == model.card.version))
    if row is None:
        session.add(CaseEmbedding(case_id=case_id, model_id=model.card.id, model_version=model.card.version,
                                  views=int(views.shape[0]), vector=views.tobytes()))
    else:
        row.views, row.vector = int(views.shape[0]), views.tobytes()
    session.flush()


def store_from_run(session: Session, case: Case, model: LoadedModel, result: Any) -> None:
    if getattr(result, "views", None) is not None:
        store_embedding(session, case_id=case.id, model=model, views=result.views)


def embeddings_for(session: Session, *, model: LoadedModel, case_ids: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
    """case id → (V, 512) embedding by the served model version (only cases it has encoded)."""
    query = select(CaseEmbedding.case_id, CaseEmbedding.views, CaseEmbedding.vector).where(
        CaseEmbedding.model_id == model.card.id, CaseEmbedding.model_version == model.card.version)
    if case_ids is not None:
        if not case_ids:
            return {}
        query = query.where(CaseEmbedding.case_id.in_(list(case_ids)))
    return {cid: np.frombuffer(vector, dtype=np.float32).reshape(views, -1)
            for cid, views, vector in session.execute(query)}


def missing_embeddings(session: Session, *, model: LoadedModel) -> list[str]:
    """Case ids the served model version has not encoded (what the re-encoding job works through)."""
    have = select(CaseEmbedding.case_id).where(CaseEmbedding.model_id == model.card.id,
                                                CaseEmbedding.model_version == model.card.version)
    return list(session.scalars(select(Case.id).where(Case.id.not_in(have)).order_by(Case.created_at)))


# ---------------------------------------------------------------- sharing

def is_shared(session: Session, *, case_id: str) -> bool:
    return session.get(MatchShare, case_id) is not None


def share(session: Session, *, case: Case, user: User, ip: str | None = None) -> bool:
    """Share a confirmed case for matching; False when it already was. Callers commit."""
    if current_diagnosis(session, case_id=case.id) is None:
        raise MatchingError("not_confirmed", "Only a case with a confirmed diagnosis can be shared for matching.")
    if is_shared(session, case_id=case.id):
        return False
    session.add(MatchShare(case_id=case.id, shared_by=user.id))
    audit.record(session, action="share_for_matching", user=user, case_id=case.id, ip=ip)
    session.flush()
    return True


def unshare(session: Session, *, case: Case, user: User, ip: str | None = None, reason: str | None = None) -> bool:
    """Revoke the share; False when it was not shared. Callers commit."""
    row = session.get(MatchShare, case.id)
    if row is None:
        return False
    session.delete(row)
    audit.record(session, action="unshare_for_matching", user=user, case_id=case.id, ip=ip,
                 detail={"reason": reason} if reason else None)
    session.flush()
    return True


# ---------------------------------------------------------------- the living gallery

_SPACES = re.compile(r"\s+")


def _syndrome_for(row: Diagnosis, model_syndromes: Sequence[Label], extra: dict[str, Label]) -> Label:
    """The model syndrome a confirmed diagnosis names (by label id, else OMIM id), or one of its own."""
    for label in model_syndromes:
        if row.syndrome_id and label.id == row.syndrome_id:
            return label
    if row.omim:
        for label in model_syndromes:
            if label.omim and re.sub(r"\D", "", label.omim) == row.omim:
                return label
    key = f"OMIM:{row.omim}" if row.omim else "name:" + _SPACES.sub(" ", (row.name or "").strip().lower())
    return extra.setdefault(key, Label(id=key, name=row.name or key, omim=row.omim))


@dataclass(frozen=True)
class SharedCase:
    case_id: str
    owner_id: int
    syndrome: Label
    embedding: np.ndarray  # (V, 512)


def shared_cases(session: Session, model: LoadedModel, *, exclude_case: str | None = None
                 ) -> tuple[list[SharedCase], tuple[Label, ...]]:
    """Shared, still confirmed cases with an embedding by the served model version; the syndrome list."""
    rows = session.execute(
        select(MatchShare.case_id, Case.owner_id).join(Case, Case.id == MatchShare.case_id)
    ).all()
    ids = [cid for cid, _ in rows if cid != exclude_case]
    owners = dict(rows)
    diagnoses = current_diagnoses(session, case_ids=ids)
    embeddings = embeddings_for(session, model=model, case_ids=[cid for cid in ids if cid in diagnoses])
    known = tuple(model.syndromes)
    extra: dict[str, Label] = {}
    found = [SharedCase(cid, owners[cid], _syndrome_for(diagnoses[cid], known, extra), embeddings[cid])
             for cid in ids if cid in diagnoses and cid in embeddings
             and embeddings[cid].shape[0] == model.views]
    return found, known + tuple(extra.values())


def living_references(session: Session, model: LoadedModel, exclude_case: str | None) -> References | None:
    """The shared confirmed cases as a second gallery for ranking (None when there are none)."""
    found, syndromes = shared_cases(session, model, exclude_case=exclude_case)
    if not found:
        return None
    gallery = build_gallery(np.stack([c.embedding for c in found]), [c.syndrome.id for c in found],
                            [c.case_id for c in found], syndromes, subject_ids=[""] * len(found),
                            what="shared cases", sources=["case"] * len(found), transient=True)
    return References(gallery=gallery, syndromes=syndromes)


# ---------------------------------------------------------------- similar patients and matches

def _unit(views: np.ndarray) -> np.ndarray:
    views = np.asarray(views, dtype=np.float64)
    return views / np.maximum(np.linalg.norm(views, axis=-1, keepdims=True), 1e-12)


def distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, N) cosine distances between (M, V, 512) and (N, V, 512), averaged over views (GM-Arc's rule)."""
    return 1.0 - np.einsum("mvd,nvd->mnv", _unit(a), _unit(b)).mean(axis=2)


def _search_rows(stacked: np.ndarray) -> np.ndarray:
    """(N, V·512) float32 unit rows whose inner products are the mean cosine over views."""
    unit = _unit(stacked)
    return (unit.reshape(unit.shape[0], -1) / np.sqrt(unit.shape[1])).astype(np.float32)


def _exact_index(stacked: np.ndarray) -> NearestIndex:
    """An exact index over one request's embeddings: it lives for this request only, so an approximate one
    would cost more to train than the scans it saves. Its candidates are re-scored by
    :func:`distance_matrix`, so distances and order are those of the full float64 matrix."""
    rows = _search_rows(stacked)
    index = NearestIndex(rows.shape[1], approximate_from=None)
    index.add(rows)
    return index


def nearest(query: np.ndarray, stacked: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``limit`` rows of (N, V, 512) ``stacked`` nearest to one (V, 512) ``query`` and their distances,
    closest first, ties by row: what a stable sort of the full :func:`distance_matrix` row gives, without
    computing (or holding) it for every row."""
    rows = _exact_index(stacked).candidates(_search_rows(query[None]), limit)[0]
    distances = distance_matrix(query[None], stacked[rows])[0]
    order = np.argsort(distances, kind="stable")[:limit]
    return rows[order], distances[order]


def closest_pairs(stacked: np.ndarray, threshold: float, limit: int) -> list[tuple[float, int, int]]:
    """(distance, i, j) with i < j for the ``limit`` closest pairs of rows below ``threshold``, sorted —
    those of the full (N, N) :func:`distance_matrix`, which at 10,000 cases would need 800 MB per view.
    A pair among the closest ``limit`` has j among i's ``limit + 1`` nearest rows (i itself included), else
    i would have ``limit`` closer partners; so each row's exact candidates suffice."""
    found: dict[tuple[int, int], float] = {}
    for i, rows in enumerate(_exact_index(stacked).candidates(_search_rows(stacked), limit + 1)):
        partners = rows[rows != i]
        if not len(partners):
            continue
        for j, d in zip(partners.tolist(), distance_matrix(stacked[i:i + 1], stacked[partners])[0].tolist(),
                        strict=True):
            if d < threshold:
                found.setdefault((min(i, j), max(i, j)), d)
    return sorted((d, i, j) for (i, j), d in found.items())[:limit]


def similar_cases(session: Session, *, user: User, case: Case, model: LoadedModel, limit: int = 10
                  ) -> list[dict[str, Any]]:
    """The nearest cases to ``case``: the user's own (named, with a compare link) and other users' shared
    confirmed cases (anonymous: syndrome and distance only). Empty when the case has no embedding yet."""
    mine = embeddings_for(session, model=model, case_ids=[case.id]).get(case.id)
    if mine is None:
        return []
    visible = select(Case.id)
    if not user.is_admin:
        visible = visible.where(Case.owner_id == user.id)
    visible_ids = [cid for cid in session.scalars(visible) if cid != case.id]
    own = embeddings_for(session, model=model, case_ids=visible_ids)
    shared, _ = shared_cases(session, model, exclude_case=case.id)
    others = [s for s in shared if s.case_id not in own]
    ids = list(own) + [s.case_id for s in others]
    if not ids:
        return []
    stacked = np.stack([own[cid] for cid in own] + [s.embedding for s in others])
    order, distances = nearest(mine, stacked, limit)
    cases = {c.id: c for c in session.scalars(select(Case).where(Case.id.in_(list(own))))} if own else {}
    diagnoses = current_diagnoses(session, case_ids=list(own))
    flagged = out_of_range_for(session, case_ids=[ids[i] for i in order.tolist()])  # far-away faces: no evidence
    shared_by_id = {s.case_id: s for s in shared}
    out = []
    for i, distance in zip(order.tolist(), distances.tolist(), strict=True):
        cid = ids[i]
        if cid in own:
            other = cases[cid]
            diagnosis = diagnoses.get(cid)
            out.append({"case_id": cid, "pseudonym": other.pseudonym, "distance": round(distance, 4),
                        "diagnosis": diagnosis.name if diagnosis else None, "solved": diagnosis is not None,
                        "shared": cid in shared_by_id, "anonymous": False, "out_of_range": cid in flagged,
                        "compare_url": f"/cases/{case.id}/compare?reference=case:{cid}"})
        else:
            s = shared_by_id[cid]
            out.append({"case_id": None, "pseudonym": None, "distance": round(distance, 4),
                        "diagnosis": s.syndrome.name, "solved": True, "shared": True, "anonymous": True,
                        "out_of_range": cid in flagged, "label": ANONYMOUS, "compare_url": None})
    return out


def unsolved_matches(session: Session, *, user: User, model: LoadedModel, threshold: float, limit: int = 200
                     ) -> list[dict[str, Any]]:
    """Pairs of unsolved cases the user may see whose distance is below ``threshold``, closest first."""
    visible = select(Case.id)
    if not user.is_admin:
        visible = visible.where(Case.owner_id == user.id)
    ids = list(session.scalars(visible))
    solved = set(current_diagnoses(session, case_ids=ids))
    embeddings = embeddings_for(session, model=model, case_ids=[cid for cid in ids if cid not in solved])
    keys = sorted(embeddings)
    if len(keys) < 2:
        return []
    pairs = closest_pairs(np.stack([embeddings[k] for k in keys]), threshold, limit)
    cases = {c.id: c for c in session.scalars(select(Case).where(Case.id.in_(keys)))}
    flagged = out_of_range_for(session, case_ids=[keys[k] for _, i, j in pairs for k in (i, j)])
    return [{"distance": round(d, 4), "a": cases[keys[i]], "b": cases[keys[j]],
             "a_out_of_range": keys[i] in flagged, "b_out_of_range": keys[j] in flagged,
             "compare_url": f"/cases/{keys[i]}/compare?reference=case:{keys[j]}"} for d, i, j in pairs]
