"""Face-only, phenotype-only and combined ranking on synthetic cases with simulated annotations.

A case is a synthetic face (``generate_one(seed, syndrome, index)``, drawn severity 0.3-1.0, through the
real detection and alignment) ranked by the model's gallery, plus HPO terms simulated from its syndrome's
profile (:func:`app.synth.phenotype.simulate_terms`: each present feature missed with ``missing_rate``,
a Poisson number of noise terms with mean ``noise_mean``). The same code fits the fusion (one seed) and
measures the three rankings (another seed), so the reported numbers are on cases the fit never saw.

Top-k with 95% percentile-bootstrap intervals over cases, and paired intervals of the differences
(combined minus face-only, combined minus phenotype-only), since all three rank the same cases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.nets.fusion import Fusion, fit_conditional_logit, rank_order
from app.nets.phenotype import PhenotypeModel

__all__ = ["CaseTable", "annotate", "evaluate_rankings", "face_table", "fit_fusion", "rankings_hits"]

Progress = Callable[[int, int], None]


@dataclass
class CaseTable:
    """Per-case scores for every candidate syndrome (the columns are the model's labels, in order)."""

    image_ids: list[str]
    truth: np.ndarray  # (N,) label index
    face: np.ndarray  # (N, K) similarity = 1 - cosine distance to the nearest gallery image
    phenotype: np.ndarray | None = None  # (N, K) phenotype score
    terms: list[list[str]] | None = None

    def to_json(self, label_ids: Sequence[str]) -> dict[str, Any]:
        return {"labels": list(label_ids), "cases": [
            {"image_id": self.image_ids[i], "truth": label_ids[int(self.truth[i])],
             "face": [round(float(x), 6) for x in self.face[i]],
             "phenotype": None if self.phenotype is None else [round(float(x), 6) for x in self.phenotype[i]],
             "terms": None if self.terms is None else self.terms[i]} for i in range(len(self.image_ids))]}


def face_table(model: Any, *, seed: int, per_class: int, classes: Sequence[str] = (),
               progress: Progress | None = None) -> CaseTable:
    """Generate, align and rank synthetic faces of every syndrome (not ``unaffected``) with ``model``."""
    from app.nets.predict import predict
    from app.synth.classes import CLASSES
    from app.synth.generate import generate_one, image_id
    from app.vision.detect import FaceDetector
    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    label_ids = [label.id for label in model.labels]
    wanted = list(classes) or [c.id for c in CLASSES if c.features]
    detector = FaceDetector()
    tasks = [(c, i) for c in wanted for i in range(per_class)]
    ids, truth, rows = [], [], []
    for n, (class_id, index) in enumerate(tasks):
        face = generate_one(seed, class_id, index)
        try:
            processed = process_photo(face.jpeg, detector=detector)
        except IntakeError:
            continue  # counted by the caller as the difference to per_class × classes
        finally:
            if progress is not None:
                progress(n + 1, len(tasks))
        result = predict(model, processed.aligned.crop, top_k=len(label_ids))
        row = np.full(len(label_ids), np.nan)
        for p in result.ranked:
            row[label_ids.index(p.syndrome_id)] = 1.0 - p.distance if p.distance is not None else np.nan
        if np.isnan(row).all():
            raise ValueError("the model ranks without a gallery; the fusion needs gallery similarities")
        row[np.isnan(row)] = np.nanmin(row) - 1.0  # syndromes without gallery faces rank after the others
        ids.append(image_id(class_id, index))
        truth.append(label_ids.index(class_id))
        rows.append(row)
    return CaseTable(image_ids=ids, truth=np.asarray(truth, np.int64), face=np.asarray(rows, np.float64))


def annotate(table: CaseTable, phenotype: PhenotypeModel, label_ids: Sequence[str], *, seed: int,
             missing_rate: float, noise_mean: float) -> CaseTable:
    """Simulated terms per case and their phenotype scores against every label's profile."""
    from app.synth.phenotype import ProfileTerm, case_rng, simulate_terms

    scores, terms = [], []
    for image_id, truth in zip(table.image_ids, table.truth, strict=True):
        class_id, _, index = image_id.rpartition("-")  # app.synth.generate.image_id: "<class>-<index:05d>"
        profile = [ProfileTerm(p.id, p.name, p.frequency, p.region) for p in phenotype.profiles[label_ids[truth]]]
        entered = simulate_terms(profile, case_rng(seed, class_id, int(index)), phenotype.noise_pool,
                                 missing_rate=missing_rate, noise_mean=noise_mean)
        results = phenotype.score_all(entered)
        scores.append([results[label].score for label in label_ids])
        terms.append(entered)
    return CaseTable(image_ids=table.image_ids, truth=table.truth, face=table.face,
                     phenotype=np.asarray(scores, np.float64), terms=terms)


def fit_fusion(table: CaseTable, fitted_on: dict[str, Any], data: str | None = None) -> Fusion:
    assert table.phenotype is not None
    weights, fit = fit_conditional_logit(table.face, table.phenotype, table.truth)
    return Fusion(face_weight=float(weights[0]), phenotype_weight=float(weights[1]),
                  fitted_on={**fitted_on, "n_cases": len(table.truth), **{k: round(v, 4) for k, v in fit.items()}},
                  data=data)


def rankings_hits(table: CaseTable, fusion: Fusion, ks: Sequence[int] = (1, 5)) -> dict[str, dict[int, np.ndarray]]:
    """Per ranking and k, whether each case's truth is in the top k. Ties: the face ranking breaks the
    combined ranking's ties, the label order the others' (as the app does)."""
    assert table.phenotype is not None
    combined = fusion.utilities(table.face, table.phenotype)
    hits: dict[str, dict[int, np.ndarray]] = {name: {k: np.zeros(len(table.truth), bool) for k in ks}
                                              for name in ("face", "phenotype", "combined")}
    for i, truth in enumerate(table.truth):
        face_order = rank_order(table.face[i])
        face_rank = np.empty_like(face_order)
        face_rank[face_order] = np.arange(len(face_order))
        orders = {"face": face_order, "phenotype": rank_order(table.phenotype[i]),
                  "combined": rank_order(combined[i], face_rank)}
        for name, order in orders.items():
            position = int(np.flatnonzero(order == truth)[0])
            for k in ks:
                hits[name][k][i] = position < k
    return hits


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def evaluate_rankings(table: CaseTable, fusion: Fusion, *, ks: Sequence[int] = (1, 5), resamples: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Top-k of the three rankings with bootstrap intervals, and paired intervals of combined's gains."""
    hits = rankings_hits(table, fusion, ks)
    n = len(table.truth)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    out: dict[str, Any] = {"n_cases": n, "resamples": resamples, "rankings": {}, "combined_minus": {}}
    for name, by_k in hits.items():
        out["rankings"][name] = {f"top{k}": {"value": round(float(h.mean()), 4),
                                             "interval95": _interval(h[draws].mean(axis=1))} for k, h in by_k.items()}
    for other in ("face", "phenotype"):
        out["combined_minus"][other] = {}
        for k in ks:
            diff = hits["combined"][k].astype(float) - hits[other][k].astype(float)
            out["combined_minus"][other][f"top{k}"] = {"value": round(float(diff.mean()), 4),
                                                       "interval95": _interval(diff[draws].mean(axis=1))}
    return out
