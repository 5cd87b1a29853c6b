"""A case's three rankings: face-only (the stored run, unchanged), phenotype-only and combined, with each
entered term's contribution per syndrome (app.nets.phenotype) and the fusion of the served model's card.

Nothing is stored: the rankings are a function of the newest face ranking, the case's terms and the model
folder, recomputed when read (microseconds per syndrome), so adding a term changes them at once and erasing a
case leaves nothing behind. Without entered terms the combined ranking *is* the face ranking (same rows, same
order): no fusion is applied at all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.cases.models import Case
from app.nets.fusion import Fusion, rank_order
from app.nets.phenotype import PROFILE_FILE, PhenotypeModel, load_phenotype
from app.nets.registry import LoadedModel
from app.phenotypes.ontology import ontology
from app.phenotypes.service import case_terms
from app.predictions.models import PredictionRun

__all__ = ["case_rankings", "model_fusion", "model_phenotype", "phenotype_ranking"]


def model_phenotype(model: LoadedModel) -> PhenotypeModel | None:
    section = model.card.extra.get("phenotype") or {}
    name = section.get("profiles", PROFILE_FILE)
    return load_phenotype(model.folder, name, (section.get("sha256") or {}).get(name))


def model_fusion(model: LoadedModel) -> Fusion | None:
    section = (model.card.extra.get("phenotype") or {}).get("fusion")
    return Fusion.from_json(section) if section else None


def _ancestors(term_id: str) -> set[str]:
    return ontology().ancestors(term_id)


def _names(phenotype: PhenotypeModel) -> dict[str, str]:
    names = {}
    for entries in phenotype.profiles.values():
        names.update({e.id: e.name for e in entries})
    return names


def phenotype_ranking(model: LoadedModel, phenotype: PhenotypeModel, present: list[str],
                      excluded: list[str]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Phenotype-only rows (every label, best first; ties in label order) and per-syndrome contributions."""
    scores = phenotype.score_all(present, excluded, _ancestors, syndromes=[label.id for label in model.labels])
    values = [scores[label.id].score for label in model.labels]
    names = _names(phenotype)
    hpo = ontology()
    rows = []
    for rank, index in enumerate(rank_order(values), start=1):
        label = model.labels[int(index)]
        rows.append({"rank": rank, "syndrome_id": label.id, "name": label.name, "omim": label.omim,
                     "score": round(values[int(index)], 6)})
    contributions = {}
    for label in model.labels:
        items = []
        for part in scores[label.id].contributions:
            term = hpo.get(part.id)
            item = part.to_json()
            item["name"] = term.name if term else part.id
            item["best_match_name"] = names.get(part.best_match) if part.best_match else None
            items.append(item)
        contributions[label.id] = items
    return rows, contributions


def case_rankings(session: Session, *, case: Case, run: PredictionRun | None,
                  model: LoadedModel | None) -> dict[str, Any]:
    """The ``phenotype_ranking`` object of the case JSON (see the module notes)."""
    rows = case_terms(session, case_id=case.id)
    present = [r.hpo_id for r in rows if not r.excluded]
    excluded = [r.hpo_id for r in rows if r.excluded]
    face = list(run.ranked) if run else []
    out: dict[str, Any] = {
        "terms": [{"id": r.hpo_id, "name": r.name, "excluded": r.excluded} for r in rows],
        "face": face, "phenotype": [], "combined": face, "contributions": {},
        "available": False, "reason": None, "fusion": None, "profiles": None,
    }
    if model is None:
        out["reason"] = "no model is served"
        return out
    phenotype = model_phenotype(model)
    if phenotype is None:
        out["reason"] = (f"model {model.version} has no phenotype profiles "
                         "(an operator runs `gestaltlens phenotype profiles`)")
        return out
    out["profiles"] = {"synthetic": phenotype.synthetic, "notice": phenotype.notice, "source": phenotype.source}
    if run is not None and f"{run.model_id}@{run.model_version}" != model.version:
        out["reason"] = "the face ranking is from another model than the one served: re-run it"
        return out
    out["available"] = True
    if not rows:
        return out  # nothing entered: the combined ranking is the face ranking, exactly
    out["phenotype"], out["contributions"] = phenotype_ranking(model, phenotype, present, excluded)
    fusion = model_fusion(model)
    if fusion is None or not face:
        out["reason"] = "no fitted fusion in the model card" if fusion is None else "the case has no face ranking"
        out["combined"] = []
        return out
    out["fusion"] = fusion.to_json()
    out["combined"] = _combined(face, out["phenotype"], fusion)
    return out


def _combined(face: list[dict[str, Any]], phenotype: list[dict[str, Any]], fusion: Fusion) -> list[dict[str, Any]]:
    """Fuse over the syndromes the stored face ranking has (a run stores the top 10); ties by face rank."""
    pheno = {row["syndrome_id"]: row for row in phenotype}
    if fusion.face_feature != "similarity" or any(row.get("distance") is None for row in face):
        return []  # the fusion was fitted on gallery similarities; a softmax ranking is another quantity
    similarity = [1.0 - float(row["distance"]) for row in face]
    scores = [pheno[row["syndrome_id"]]["score"] if row["syndrome_id"] in pheno else 0.0 for row in face]
    utilities = fusion.utilities(similarity, scores)
    rows = []
    for rank, index in enumerate(rank_order(utilities, [row["rank"] for row in face]), start=1):
        row = face[int(index)]
        sid = row["syndrome_id"]
        rows.append({"rank": rank, "syndrome_id": sid, "name": row["name"], "omim": row.get("omim"),
                     "score": round(float(utilities[int(index)]), 6), "face_rank": row["rank"],
                     "phenotype_rank": pheno[sid]["rank"] if sid in pheno else None})
    return rows

