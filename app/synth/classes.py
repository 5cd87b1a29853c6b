"""The synthetic syndromes: which facial features each one changes, with HPO terms and regions.

A synthetic class is defined by one or two features; each feature is a single, controllable change of
the face renderer (eye spacing, palpebral slant, philtrum length ...) tied to one HPO term and one region
of :mod:`app.synth.regions`. Because we know exactly which pixels a feature moved, every image carries a
ground-truth mask against which explanation maps can be scored.

Names are deliberately neutral ("Synthetic syndrome A"): these are not models of real disorders, and a
demo that said "Cornelia de Lange" next to a drawn face would invite exactly the wrong reading.

Plain data, no heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.synth.regions import HpoTerm, get_region


@dataclass(frozen=True)
class Feature:
    """One renderer-controlled dysmorphic feature."""

    id: str
    hpo: HpoTerm
    region: str  # a region id of app.synth.regions


@dataclass(frozen=True)
class SynthClass:
    """A class of the synthetic data set: ``unaffected`` or a synthetic syndrome."""

    id: str
    name: str
    description: str
    features: tuple[str, ...]  # feature ids; empty for unaffected
    regions: tuple[str, ...]  # region ids where the features (and every pixel they change) live

    @property
    def hpo(self) -> tuple[HpoTerm, ...]:
        """The HPO terms of the features, in the same order as ``features``."""
        return tuple(FEATURES[f].hpo for f in self.features)

    def to_dict(self) -> dict[str, object]:
        """The entry of ``dataset.json``'s ``classes`` list."""
        return {
            "id": self.id,
            "name": self.name,
            "omim": None,
            "hpo": [term.to_dict() for term in self.hpo],
            "features": list(self.features),
            "regions": list(self.regions),
            "description": self.description,
        }


def _feature(feature_id: str, hpo_id: str, hpo_name: str, region: str) -> Feature:
    get_region(region)  # fail at import time on a typo, not when a rating is stored
    return Feature(id=feature_id, hpo=HpoTerm(hpo_id, hpo_name), region=region)


FEATURES: dict[str, Feature] = {
    f.id: f
    for f in (
        _feature("hypertelorism", "HP:0000316", "Hypertelorism", "eyes"),
        _feature("downslanted_palpebral_fissures", "HP:0000494", "Downslanted palpebral fissures", "eyes"),
        _feature("upslanted_palpebral_fissure", "HP:0000582", "Upslanted palpebral fissure", "eyes"),
        _feature("long_philtrum", "HP:0000343", "Long philtrum", "philtrum_upper_lip"),
        _feature("thin_upper_lip_vermilion", "HP:0000219", "Thin upper lip vermilion", "philtrum_upper_lip"),
        _feature("synophrys", "HP:0000664", "Synophrys", "eyebrows"),
        _feature("thick_eyebrow", "HP:0000574", "Thick eyebrow", "eyebrows"),
        _feature("wide_mouth", "HP:0000154", "Wide mouth", "mouth"),
        _feature("thick_lower_lip_vermilion", "HP:0000179", "Thick lower lip vermilion", "mouth"),
        _feature("downturned_corners_of_mouth", "HP:0002714", "Downturned corners of mouth", "mouth"),
        _feature("bulbous_nose", "HP:0000414", "Bulbous nose", "nose"),
        _feature("micrognathia", "HP:0000347", "Micrognathia", "chin_jaw"),
    )
}

#: The classes in index order; ``unaffected`` is index 0. Appending a class never changes the others'
#: images, because the per-image random stream is keyed by the class *id*, not its index.
CLASSES: tuple[SynthClass, ...] = (
    SynthClass(
        id="unaffected",
        name="Unaffected",
        description="No synthetic dysmorphic feature: normal population variation only (the same traits "
        "vary as in the syndromes, within the normal range).",
        features=(),
        regions=(),
    ),
    SynthClass(
        id="syn_a",
        name="Synthetic syndrome A",
        description="Widely spaced eyes (hypertelorism); eyebrows and nose stay in place.",
        features=("hypertelorism",),
        regions=("eyes",),
    ),
    SynthClass(
        id="syn_b",
        name="Synthetic syndrome B",
        description="Downslanted palpebral fissures: the outer corners of the eyes sit lower than the inner.",
        features=("downslanted_palpebral_fissures",),
        regions=("eyes",),
    ),
    SynthClass(
        id="syn_c",
        name="Synthetic syndrome C",
        description="Long philtrum with a thin upper lip vermilion; the mouth sits lower under an unchanged "
        "nose and chin.",
        features=("long_philtrum", "thin_upper_lip_vermilion"),
        regions=("philtrum_upper_lip", "mouth"),
    ),
    SynthClass(
        id="syn_d",
        name="Synthetic syndrome D",
        description="Synophrys with thick eyebrows: the brows meet over the nasal root.",
        features=("synophrys", "thick_eyebrow"),
        regions=("eyebrows",),
    ),
    SynthClass(
        id="syn_e",
        name="Synthetic syndrome E",
        description="Wide mouth with a thick lower lip vermilion.",
        features=("wide_mouth", "thick_lower_lip_vermilion"),
        regions=("mouth",),
    ),
    SynthClass(
        id="syn_f",
        name="Synthetic syndrome F",
        description="Bulbous nose: a broad, rounded nasal tip with wide alae and nostrils.",
        features=("bulbous_nose",),
        regions=("nose",),
    ),
    SynthClass(
        id="syn_g",
        name="Synthetic syndrome G",
        description="Micrognathia: a small, short chin and a narrow lower jaw.",
        features=("micrognathia",),
        regions=("chin_jaw",),
    ),
    SynthClass(
        id="syn_h",
        name="Synthetic syndrome H",
        description="Upslanted palpebral fissures together with downturned corners of the mouth: two "
        "separate regions, for testing whether explanations find both.",
        features=("upslanted_palpebral_fissure", "downturned_corners_of_mouth"),
        regions=("eyes", "mouth"),
    ),
)

CLASS_IDS: tuple[str, ...] = tuple(c.id for c in CLASSES)
_BY_ID = {c.id: c for c in CLASSES}


def get_class(class_id: str) -> SynthClass:
    """The class with this id; KeyError names the valid ids."""
    try:
        return _BY_ID[class_id]
    except KeyError:
        raise KeyError(f"unknown synthetic class {class_id!r}; known: {', '.join(CLASS_IDS)}") from None


def class_index(class_id: str) -> int:
    """Position of the class in :data:`CLASSES` (the ``label_index`` of the data set)."""
    return CLASS_IDS.index(get_class(class_id).id)
