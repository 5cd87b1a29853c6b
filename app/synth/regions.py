"""The facial region vocabulary, defined once on the aligned ArcFace 112x112 template.

Ratings ("which regions did this map highlight?"), region-mass metrics of attribution maps and the
synthetic ground truth must all speak of the *same* forehead, eyes and chin, or their numbers cannot be
compared. So the regions live here as plain data: an id, a display name, the HPO terms a clinician
would file under that region, and shapes (polygons and ellipses, unioned) in the coordinates of the
aligned crop, where every attribution map lives.

The shapes were placed on the template landmarks (eyes at y~52, nose tip at y~72, mouth corners at
y~92) and checked against the average aligned synthetic face. They are allowed to overlap a little at
their borders (the upper lip belongs to both "philtrum / upper lip" and "mouth"): a region is a place a
clinician names, not a cell of a partition.

Only numpy is imported, so the web layer's rating forms can use this module without pulling in OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

TEMPLATE_SIZE = 112


@dataclass(frozen=True)
class HpoTerm:
    """One Human Phenotype Ontology term."""

    id: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class Shape:
    """A polygon ((x, y) vertices) or an ellipse (centre, semi-axes, angle in degrees) in template pixels.

    ``subtract`` removes the shape from the union of the ones before it; that is how "hair / background"
    is "everything but the face oval and the ears" without listing the frame's corners by hand.
    """

    kind: Literal["polygon", "ellipse"]
    points: tuple[tuple[float, float], ...] = ()
    center: tuple[float, float] = (0.0, 0.0)
    axes: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    subtract: bool = False


@dataclass(frozen=True)
class Region:
    """A named facial region: id (stable, stored in ratings), display name, HPO terms, template shapes."""

    id: str
    name: str
    hpo: tuple[HpoTerm, ...]
    shapes: tuple[Shape, ...]

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "hpo": [term.to_dict() for term in self.hpo]}


def _poly(*points: tuple[float, float], subtract: bool = False) -> Shape:
    return Shape(kind="polygon", points=tuple(points), subtract=subtract)


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, *, subtract: bool = False) -> Shape:
    return Shape(kind="ellipse", center=(cx, cy), axes=(ax, ay), angle=angle, subtract=subtract)


def _hpo(*pairs: tuple[str, str]) -> tuple[HpoTerm, ...]:
    return tuple(HpoTerm(id=i, name=n) for i, n in pairs)


# The face oval that separates the face from "hair / background" (and that the cheeks and jaw sit in).
_FACE_OVAL = (56.0, 64.0, 42.0, 54.0)

#: Every region, in display order (top of the head to the chin, then the periphery).
REGIONS: tuple[Region, ...] = (
    Region(
        id="forehead",
        name="Forehead",
        hpo=_hpo(
            ("HP:0000337", "Broad forehead"),
            ("HP:0000348", "High forehead"),
            ("HP:0011220", "Prominent forehead"),
        ),
        shapes=(
            _poly(
                (22, 36),
                (26, 24),
                (34, 15),
                (46, 11),
                (56, 10),
                (66, 11),
                (78, 15),
                (86, 24),
                (90, 36),
                (74, 33),
                (56, 35),
                (38, 33),
            ),
        ),
    ),
    Region(
        id="eyebrows",
        name="Eyebrows",
        hpo=_hpo(
            ("HP:0000664", "Synophrys"),
            ("HP:0000574", "Thick eyebrow"),
            ("HP:0002553", "Highly arched eyebrow"),
            ("HP:0045075", "Sparse eyebrow"),
        ),
        shapes=(
            _poly((20, 44), (23, 37), (38, 33), (56, 35), (74, 33), (89, 37), (92, 44), (74, 42), (56, 44), (38, 42)),
        ),
    ),
    Region(
        id="eyes",
        name="Eyes / periorbital",
        hpo=_hpo(
            ("HP:0000316", "Hypertelorism"),
            ("HP:0000601", "Hypotelorism"),
            ("HP:0000494", "Downslanted palpebral fissures"),
            ("HP:0000582", "Upslanted palpebral fissure"),
            ("HP:0000508", "Ptosis"),
            ("HP:0000286", "Epicanthus"),
            ("HP:0012745", "Short palpebral fissure"),
        ),
        shapes=(_ellipse(38.3, 51.5, 14.5, 10.0), _ellipse(73.5, 51.5, 14.5, 10.0)),
    ),
    Region(
        id="nose",
        name="Nose",
        hpo=_hpo(
            ("HP:0000414", "Bulbous nose"),
            ("HP:0000431", "Wide nasal bridge"),
            ("HP:0005280", "Depressed nasal bridge"),
            ("HP:0000463", "Anteverted nares"),
            ("HP:0003196", "Short nose"),
        ),
        shapes=(
            _poly((51, 46), (61, 46), (63, 62), (70, 69), (71, 79), (64, 83), (48, 83), (41, 79), (42, 69), (49, 62)),
        ),
    ),
    Region(
        id="philtrum_upper_lip",
        name="Philtrum / upper lip",
        hpo=_hpo(
            ("HP:0000343", "Long philtrum"),
            ("HP:0000322", "Short philtrum"),
            ("HP:0000319", "Smooth philtrum"),
            ("HP:0000219", "Thin upper lip vermilion"),
        ),
        shapes=(_poly((47, 81), (65, 81), (70, 86), (71, 91), (56, 93), (41, 91), (42, 86)),),
    ),
    Region(
        id="mouth",
        name="Mouth",
        hpo=_hpo(
            ("HP:0000154", "Wide mouth"),
            ("HP:0000160", "Narrow mouth"),
            ("HP:0002714", "Downturned corners of mouth"),
            ("HP:0000179", "Thick lower lip vermilion"),
        ),
        shapes=(_ellipse(56.0, 95.0, 21.0, 8.5),),
    ),
    Region(
        id="chin_jaw",
        name="Chin / jaw",
        hpo=_hpo(
            ("HP:0000347", "Micrognathia"),
            ("HP:0000278", "Retrognathia"),
            ("HP:0000303", "Mandibular prognathia"),
            ("HP:0000307", "Pointed chin"),
        ),
        # A U along the lower face: jaw lines up to the level of the nose, and the chin under the lower lip.
        shapes=(
            _poly(
                (5, 64),
                (9, 81),
                (18, 97),
                (31, 108),
                (56, 116),
                (81, 108),
                (94, 97),
                (103, 81),
                (107, 64),
                (97, 64),
                (93, 79),
                (85, 93),
                (72, 102),
                (56, 105),
                (40, 102),
                (27, 93),
                (19, 79),
                (15, 64),
            ),
        ),
    ),
    Region(
        id="cheeks",
        name="Cheeks",
        hpo=_hpo(
            ("HP:0000293", "Full cheeks"),
            ("HP:0000272", "Malar flattening"),
        ),
        shapes=(_ellipse(27.0, 72.0, 10.0, 11.0), _ellipse(85.0, 72.0, 10.0, 11.0)),
    ),
    Region(
        id="ears",
        name="Ears",
        hpo=_hpo(
            ("HP:0000369", "Low-set ears"),
            ("HP:0000411", "Protruding ear"),
            ("HP:0000358", "Posteriorly rotated ears"),
        ),
        shapes=(_ellipse(8.0, 62.0, 7.0, 15.0), _ellipse(104.0, 62.0, 7.0, 15.0)),
    ),
    Region(
        id="hair_background",
        name="Hair / background",
        hpo=_hpo(
            ("HP:0000294", "Low anterior hairline"),
            ("HP:0002209", "Sparse scalp hair"),
        ),
        shapes=(
            _poly((0, 0), (112, 0), (112, 112), (0, 112)),
            _ellipse(*_FACE_OVAL, subtract=True),
            _ellipse(8.0, 62.0, 7.0, 15.0, subtract=True),
            _ellipse(104.0, 62.0, 7.0, 15.0, subtract=True),
        ),
    ),
)

REGION_IDS: tuple[str, ...] = tuple(region.id for region in REGIONS)
_BY_ID = {region.id: region for region in REGIONS}


def get_region(region_id: str) -> Region:
    """The region with this id; KeyError names the valid ids."""
    try:
        return _BY_ID[region_id]
    except KeyError:
        raise KeyError(f"unknown region {region_id!r}; known: {', '.join(REGION_IDS)}") from None


def region_mask(region_id: str, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of a region on the aligned crop (template scaled to ``size``).

    A pixel belongs to a region when its centre lies inside the region's shapes.
    """
    return _cached_mask(region_id, size).copy()


def region_masks(size: int = TEMPLATE_SIZE) -> dict[str, np.ndarray]:
    """Every region's mask, keyed by id, in display order."""
    return {region_id: region_mask(region_id, size) for region_id in REGION_IDS}


def regions_for_hpo(hpo_id: str) -> list[str]:
    """Ids of the regions that list this HPO term (usually one)."""
    return [region.id for region in REGIONS if any(term.id == hpo_id for term in region.hpo)]


@lru_cache(maxsize=64)
def _cached_mask(region_id: str, size: int) -> np.ndarray:
    region = get_region(region_id)
    scale = size / TEMPLATE_SIZE
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    # Pixel centres in template units.
    px, py = xs / scale, ys / scale
    mask = np.zeros((size, size), dtype=bool)
    for shape in region.shapes:
        inside = _inside_ellipse(shape, px, py) if shape.kind == "ellipse" else _inside_polygon(shape.points, px, py)
        mask = mask & ~inside if shape.subtract else mask | inside
    mask.setflags(write=False)
    return mask


def _inside_ellipse(shape: Shape, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    angle = np.radians(shape.angle)
    dx, dy = px - shape.center[0], py - shape.center[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / shape.axes[0]) ** 2 + (v / shape.axes[1]) ** 2 <= 1.0


def _inside_polygon(points: tuple[tuple[float, float], ...], px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over pixels (a dozen vertices, 12k pixels: no need for a rasteriser)."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(points)
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside
