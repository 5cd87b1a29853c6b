"""What one synthetic photo is made of: facial traits, appearance and scene, drawn from one random stream.

Traits are facial proportions in units of the face width (bizygomatic width = 1), with the origin at the
midpoint between the eye centres and y pointing down. Their population spread is real variation that
every class shares, *including* the traits the syndromes change: unaffected people also have wide-set
eyes or a long philtrum now and then, so a classifier must weigh degree, not mere presence.

A syndrome's features are applied on top (:func:`apply_features`) as a shift scaled by the patient's
severity. At severity 1 each shift is about five to seven population standard deviations; at the lowest
severity (0.3) about 1.5 to 2, where affected and unaffected faces overlap.

Everything random is drawn here, up front and in a fixed order, whatever the class or severity; the
renderer itself is deterministic. That is what makes "the same person with the feature off" a
well-defined image, and the mask test meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

#: Severity range of affected individuals.
SEVERITY_RANGE = (0.3, 1.0)


@dataclass(frozen=True)
class Traits:
    """Facial geometry, in face widths (origin between the eyes, y down)."""

    eye_half_distance: float  # eye centre to midline (half the inter-pupillary distance)
    eye_width: float  # palpebral fissure length
    eye_opening: float  # fissure height / length
    eye_slant_deg: float  # angle of the canthal axis; + = outer corner higher
    iris_ratio: float  # iris radius / fissure length
    brow_height: float  # brow (lower edge at its head) above the eye line
    brow_thickness: float
    brow_inner_x: float  # medial end of each brow from the midline
    brow_length: float
    brow_arch: float
    glabella_density: float  # hair between the brows, 0..1
    nose_y: float  # nose tip below the eye line
    nose_tip_radius: float
    ala_half: float  # half the alar width
    nostril_scale: float
    bridge_half: float
    mouth_y: float  # stomion (where the lips meet) at the midline, below the eye line
    mouth_half: float  # half the mouth width (corner to midline)
    upper_lip: float  # upper vermilion height at the midline
    lower_lip: float  # lower vermilion height at the midline
    corner_droop: float  # how much lower the mouth corners sit than the stomion
    chin_y: float  # menton (lowest point of the chin) below the eye line
    chin_half: float  # half width of the chin's front
    jaw_half: float  # half the bigonial width
    jaw_y: float  # height of the jaw angle
    chin_prominence: float
    cheek_fullness: float
    cranium_top: float  # vertex, negative (above the eye line)
    cranium_half: float
    ear_y: float  # ear centre below the eye line
    ear_size: float
    neck_half: float


@dataclass(frozen=True)
class Glasses:
    """Spectacles; placed on the *unaffected* eye positions so they never move with a feature."""

    shape: str  # "round" | "rect"
    half_w: float
    half_h: float
    thickness: float
    rgb: tuple[float, float, float]
    lens_tint: tuple[float, float, float]
    lens_alpha: float
    glare: float


@dataclass(frozen=True)
class Appearance:
    """Colours, hair, accessories and texture seeds of one person."""

    skin_rgb: tuple[float, float, float]  # sRGB 0..1
    skin_tone: float  # 0 lightest .. 1 darkest (drives lip colour and contrast)
    blush: float
    lip_rgb: tuple[float, float, float]
    iris_rgb: tuple[float, float, float]
    pupil_ratio: float
    hair_rgb: tuple[float, float, float]
    brow_rgb: tuple[float, float, float]
    hair_style: str  # "bald" | "short" | "medium" | "long"
    hair_volume: float
    hairline_y: float
    hairline_recession: float
    sideburn_y: float
    skin_gloss: float
    skin_gloss_power: float
    skin_texture: float
    freckles: float  # 0 = none; density and contrast of freckles otherwise
    moles: int
    glasses: Glasses | None
    texture_seed: int


@dataclass(frozen=True)
class Light:
    """A directional light with ambient fill; direction is toward the light, z toward the camera."""

    direction: tuple[float, float, float]
    ambient: float
    exposure: float
    rgb: tuple[float, float, float]
    wrap: float


@dataclass(frozen=True)
class Background:
    kind: str  # "flat" | "gradient" | "radial" | "texture" | "bokeh" | "interior"
    rgb_a: tuple[float, float, float]
    rgb_b: tuple[float, float, float]
    angle: float
    scale: float
    seed: int


@dataclass(frozen=True)
class Scene:
    """Where and how the face is photographed."""

    canvas: tuple[int, int]  # (width, height) of the photo
    face_px: float  # face width in photo pixels
    center: tuple[float, float]  # photo position of the midpoint between the eyes
    roll_deg: float  # counter-clockwise on screen
    yaw_deg: float
    light: Light
    background: Background
    clothing_rgb: tuple[float, float, float]
    neckline: str  # "round" | "v" | "collar"
    shoulder_tilt: float
    vignette: float
    gradient_angle: float
    gradient_strength: float
    blur_sigma: float
    noise_sigma: float
    chroma_noise: float
    jpeg_quality: int
    noise_seed: int


@dataclass(frozen=True)
class Subject:
    """One photo's complete recipe. ``traits`` is the person as they would be without the syndrome."""

    traits: Traits
    appearance: Appearance
    scene: Scene
    severity: float
    strengths: dict[str, float]  # feature id -> effective strength (severity x per-feature variation)


# Population mean and standard deviation of every trait; sampled as truncated normals (±2.5 sd).
_TRAIT_STATS: dict[str, tuple[float, float]] = {
    "eye_half_distance": (0.222, 0.011),
    "eye_width": (0.2, 0.01),
    "eye_opening": (0.36, 0.03),
    "eye_slant_deg": (3.0, 2.0),
    "iris_ratio": (0.205, 0.01),
    "brow_height": (0.125, 0.01),
    "brow_thickness": (0.04, 0.006),
    "brow_inner_x": (0.085, 0.01),
    "brow_length": (0.245, 0.015),
    "brow_arch": (0.03, 0.008),
    "glabella_density": (0.05, 0.05),
    "nose_y": (0.262, 0.013),
    "nose_tip_radius": (0.045, 0.005),
    "ala_half": (0.118, 0.008),
    "nostril_scale": (1.0, 0.08),
    "bridge_half": (0.075, 0.008),
    "mouth_y": (0.465, 0.014),
    "mouth_half": (0.183, 0.011),
    "upper_lip": (0.048, 0.007),
    "lower_lip": (0.062, 0.008),
    "corner_droop": (0.0, 0.006),
    "chin_y": (0.8, 0.025),
    "chin_half": (0.135, 0.015),
    "jaw_half": (0.415, 0.022),
    "jaw_y": (0.5, 0.025),
    "chin_prominence": (1.0, 0.15),
    "cheek_fullness": (1.0, 0.2),
    "cranium_top": (-0.9, 0.035),
    "cranium_half": (0.5, 0.015),
    "ear_y": (0.13, 0.02),
    "ear_size": (1.0, 0.08),
    "neck_half": (0.36, 0.025),
}

# Skin albedos (sRGB) from very light to very dark; a person's skin is a point on this curve, with a
# little red/yellow undertone variation.
_SKIN_PALETTE = np.array(
    [
        (0.96, 0.84, 0.76),
        (0.92, 0.76, 0.64),
        (0.86, 0.66, 0.52),
        (0.74, 0.54, 0.40),
        (0.60, 0.42, 0.30),
        (0.46, 0.31, 0.22),
        (0.33, 0.22, 0.16),
    ]
)
_HAIR_COLOURS = {
    "black": (0.06, 0.05, 0.045),
    "dark_brown": (0.16, 0.11, 0.08),
    "brown": (0.3, 0.2, 0.13),
    "light_brown": (0.46, 0.34, 0.22),
    "blond": (0.72, 0.6, 0.4),
    "red": (0.52, 0.24, 0.12),
    "grey": (0.55, 0.54, 0.52),
    "white": (0.82, 0.8, 0.76),
}
_IRIS_COLOURS = (
    (0.33, 0.2, 0.1),
    (0.22, 0.13, 0.07),
    (0.42, 0.34, 0.17),
    (0.32, 0.42, 0.25),
    (0.3, 0.45, 0.62),
    (0.42, 0.47, 0.52),
)


def _normal(rng: np.random.Generator, mean: float, sd: float) -> float:
    return float(mean + sd * np.clip(rng.standard_normal(), -2.5, 2.5))


def sample_traits(rng: np.random.Generator) -> Traits:
    """A person's unaffected facial geometry."""
    values = {f.name: _normal(rng, *_TRAIT_STATS[f.name]) for f in fields(Traits)}
    values["glabella_density"] = max(0.0, values["glabella_density"])
    return Traits(**values)


def apply_features(traits: Traits, strengths: dict[str, float]) -> Traits:
    """The traits of the same person with the syndrome's features at these strengths (0 = off).

    Each feature moves only the traits of its own region; that is the contract the ground-truth masks
    rest on (the renderer then changes only pixels of that region).
    """
    t = traits
    s = strengths.get
    changes: dict[str, float] = {}
    if s("hypertelorism"):
        changes["eye_half_distance"] = t.eye_half_distance + 0.07 * s("hypertelorism")
    if s("downslanted_palpebral_fissures"):
        changes["eye_slant_deg"] = t.eye_slant_deg - 24.0 * s("downslanted_palpebral_fissures")
    if s("upslanted_palpebral_fissure"):
        changes["eye_slant_deg"] = t.eye_slant_deg + 22.0 * s("upslanted_palpebral_fissure")
    if s("long_philtrum"):
        changes["mouth_y"] = t.mouth_y + 0.08 * s("long_philtrum")
    if s("thin_upper_lip_vermilion"):
        changes["upper_lip"] = t.upper_lip * (1.0 - 0.6 * s("thin_upper_lip_vermilion"))
    if s("synophrys"):
        k = s("synophrys")
        changes["glabella_density"] = max(t.glabella_density, 0.35 + 0.65 * k)
        changes["brow_inner_x"] = t.brow_inner_x - 0.045 * k
    if s("thick_eyebrow"):
        changes["brow_thickness"] = t.brow_thickness + 0.03 * s("thick_eyebrow")
    if s("wide_mouth"):
        changes["mouth_half"] = t.mouth_half + 0.075 * s("wide_mouth")
    if s("thick_lower_lip_vermilion"):
        changes["lower_lip"] = t.lower_lip + 0.04 * s("thick_lower_lip_vermilion")
    if s("downturned_corners_of_mouth"):
        changes["corner_droop"] = t.corner_droop + 0.045 * s("downturned_corners_of_mouth")
    if s("bulbous_nose"):
        k = s("bulbous_nose")
        changes["nose_tip_radius"] = t.nose_tip_radius + 0.045 * k
        changes["ala_half"] = t.ala_half + 0.04 * k
        changes["nostril_scale"] = t.nostril_scale * (1.0 + 0.35 * k)
    if s("micrognathia"):
        k = s("micrognathia")
        changes["chin_y"] = t.chin_y - 0.12 * k
        changes["chin_half"] = t.chin_half * (1.0 - 0.35 * k)
        changes["jaw_half"] = t.jaw_half - 0.1 * k
        changes["jaw_y"] = t.jaw_y - 0.03 * k
        changes["chin_prominence"] = t.chin_prominence * (1.0 - 0.6 * k)
    return replace(traits, **changes)


def _mix(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray, t: float) -> tuple[float, float, float]:
    out = (1.0 - t) * np.asarray(a, dtype=np.float64) + t * np.asarray(b, dtype=np.float64)
    return (float(out[0]), float(out[1]), float(out[2]))


def _jitter(rgb: tuple[float, float, float], rng: np.random.Generator, amount: float) -> tuple[float, float, float]:
    """Vary brightness by ``amount`` and hue a little (a fifth of it per channel)."""
    factor = (1.0 + amount * rng.standard_normal()) * (1.0 + 0.2 * amount * rng.standard_normal(3))
    out = np.clip(np.asarray(rgb) * factor, 0.0, 1.0)
    return (float(out[0]), float(out[1]), float(out[2]))


def sample_appearance(rng: np.random.Generator, traits: Traits) -> Appearance:
    """Skin, eyes, hair, glasses. Hair colour is drawn to be plausible for the skin tone."""
    tone = float(rng.uniform(0.0, 1.0))
    position = tone * (len(_SKIN_PALETTE) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(_SKIN_PALETTE) - 1)
    skin = _mix(_SKIN_PALETTE[low], _SKIN_PALETTE[high], position - low)
    undertone = rng.normal(0.0, 0.03)  # + = redder, - = more yellow/olive
    skin = (
        float(np.clip(skin[0] * (1 + undertone), 0, 1)),
        float(np.clip(skin[1] * (1 - 0.3 * undertone), 0, 1)),
        float(np.clip(skin[2] * (1 - undertone + rng.normal(0, 0.03)), 0, 1)),
    )
    pigment = _mix((0.75, 0.3, 0.32), (0.36, 0.17, 0.16), tone)
    lip = _mix(skin, pigment, float(rng.uniform(0.45, 0.7)))

    # Light, blue and green irises are mostly seen with lighter skin.
    iris_weights = np.array([3, 3, 1.5, 1, 1.5, 1]) if tone < 0.5 else np.array([3, 5, 1, 0.2, 0.2, 0.2])
    iris = _IRIS_COLOURS[int(rng.choice(len(_IRIS_COLOURS), p=iris_weights / iris_weights.sum()))]
    iris = _jitter(iris, rng, 0.08)

    names = list(_HAIR_COLOURS)
    hair_weights = np.array([2, 3, 3, 2, 2, 1, 1, 0.5]) if tone < 0.4 else np.array([6, 3, 1, 0.2, 0.1, 0.1, 0.8, 0.4])
    hair = _jitter(_HAIR_COLOURS[names[int(rng.choice(len(names), p=hair_weights / hair_weights.sum()))]], rng, 0.1)
    # Brows are usually a little darker than blond/grey scalp hair, and never lighter than skin-contrast allows.
    brow = _mix(hair, (0.1, 0.07, 0.05), float(rng.uniform(0.15, 0.5)))

    style = str(rng.choice(["bald", "short", "medium", "long"], p=[0.1, 0.35, 0.25, 0.3]))
    volume = float(rng.uniform(0.02, 0.06) if style == "short" else rng.uniform(0.04, 0.12))
    # The hairline stays at least 0.08 face widths above the brows, so fringes never hide a brow feature.
    hairline = float(np.clip(rng.normal(-0.44, 0.05), -0.58, -(traits.brow_height + traits.brow_thickness + 0.1)))
    recession = float(max(0.0, rng.normal(0.02, 0.04)))
    sideburn = float(rng.uniform(0.0, 0.12))

    freckles = float(rng.uniform(0.3, 1.0)) if rng.uniform() < 0.25 * (1.0 - tone) else 0.0
    moles = int(rng.choice([0, 0, 1, 1, 2, 3]))

    glasses = None
    has_glasses = rng.uniform() < 0.12
    glasses_params = (
        str(rng.choice(["round", "rect"])),
        float(rng.uniform(0.115, 0.14)),
        float(rng.uniform(0.07, 0.09)),
        float(rng.uniform(0.008, 0.018)),
        _jitter(
            [(0.05, 0.05, 0.05), (0.25, 0.15, 0.08), (0.6, 0.6, 0.62), (0.4, 0.1, 0.1)][int(rng.integers(4))], rng, 0.1
        ),
        _jitter((0.8, 0.85, 0.9), rng, 0.05),
        float(rng.uniform(0.03, 0.12)),
        float(rng.uniform(0.0, 0.25)),
    )
    if has_glasses:
        glasses = Glasses(*glasses_params)

    return Appearance(
        skin_rgb=skin,
        skin_tone=tone,
        blush=float(rng.uniform(0.0, 1.0)),
        lip_rgb=lip,
        iris_rgb=iris,
        pupil_ratio=float(rng.uniform(0.32, 0.45)),
        hair_rgb=hair,
        brow_rgb=brow,
        hair_style=style,
        hair_volume=volume,
        hairline_y=hairline,
        hairline_recession=recession,
        sideburn_y=sideburn,
        skin_gloss=float(rng.uniform(0.04, 0.2)),
        skin_gloss_power=float(rng.uniform(10.0, 30.0)),
        skin_texture=float(rng.uniform(0.5, 1.5)),
        freckles=freckles,
        moles=moles,
        glasses=glasses,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _muted_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A plausible wall/backdrop colour: mostly desaturated, any hue, any brightness."""
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(0.0, 0.45) ** 1.3
    val = rng.uniform(0.15, 0.95)
    rgb = np.array([np.clip(abs(((hue * 6.0 + k) % 6.0) - 3.0) - 1.0, 0.0, 1.0) for k in (0.0, 4.0, 2.0)])
    out = val * (1.0 - sat + sat * rgb)
    return (float(out[0]), float(out[1]), float(out[2]))


def sample_scene(rng: np.random.Generator) -> Scene:
    """Canvas, placement, pose, light, backdrop and camera of one photo."""
    width = int(rng.integers(480, 801))
    height = int(rng.integers(480, 801))
    # The head (hair included) spans about 1.9 face widths vertically above and below the eyes: keep the
    # whole face, and most of the head, in the picture.
    max_face = min(300.0, 0.45 * width, 0.42 * height)
    face_px = float(rng.uniform(120.0, max_face))
    margin_x = 0.75 * face_px
    cx = float(rng.uniform(margin_x, width - margin_x))
    cy = float(rng.uniform(0.85 * face_px, max(0.85 * face_px + 1.0, height - 1.15 * face_px)))
    roll = float(rng.uniform(-12.0, 12.0))
    yaw = float(rng.uniform(-8.0, 8.0))

    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    off_axis = np.radians(rng.uniform(10.0, 60.0))
    direction = (
        float(np.sin(off_axis) * np.cos(azimuth)),
        float(np.sin(off_axis) * np.sin(azimuth) - 0.15),  # light tends to come from above
        float(np.cos(off_axis)),
    )
    norm = float(np.linalg.norm(direction))
    direction = (direction[0] / norm, direction[1] / norm, direction[2] / norm)
    temperature = rng.uniform(-1.0, 1.0)
    light_rgb = (1.0 + 0.06 * temperature, 1.0, 1.0 - 0.08 * temperature)
    light = Light(
        direction=direction,
        ambient=float(rng.uniform(0.2, 0.45)),
        exposure=float(rng.uniform(0.85, 1.12)),
        rgb=light_rgb,
        wrap=float(rng.uniform(0.15, 0.45)),
    )
    background = Background(
        kind=str(
            rng.choice(
                ["flat", "gradient", "radial", "texture", "bokeh", "interior"], p=[0.15, 0.2, 0.15, 0.15, 0.15, 0.2]
            )
        ),
        rgb_a=_muted_colour(rng),
        rgb_b=_muted_colour(rng),
        angle=float(rng.uniform(0.0, 360.0)),
        scale=float(rng.uniform(0.05, 0.3)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    clothing = _muted_colour(rng)
    return Scene(
        canvas=(width, height),
        face_px=face_px,
        center=(cx, cy),
        roll_deg=roll,
        yaw_deg=yaw,
        light=light,
        background=background,
        clothing_rgb=clothing,
        neckline=str(rng.choice(["round", "v", "collar"])),
        shoulder_tilt=float(rng.normal(0.0, 2.0)),
        vignette=float(rng.uniform(0.0, 0.3)),
        gradient_angle=float(rng.uniform(0.0, 360.0)),
        gradient_strength=float(rng.uniform(0.0, 0.15)),
        blur_sigma=float(rng.uniform(0.3, 1.0)),
        noise_sigma=float(rng.uniform(1.0, 4.5)),
        chroma_noise=float(rng.uniform(0.0, 1.5)),
        jpeg_quality=int(rng.integers(70, 96)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_subject(rng: np.random.Generator, features: tuple[str, ...], severity: float | None = None) -> Subject:
    """Draw a complete recipe. ``severity=None`` draws it; 0 renders the same person unaffected.

    The draws happen in the same order for every class and severity, so the person, pose and scene
    depend only on the random stream.
    """
    traits = sample_traits(rng)
    appearance = sample_appearance(rng, traits)
    scene = sample_scene(rng)
    drawn_severity = float(rng.uniform(*SEVERITY_RANGE))
    variation = rng.uniform(0.8, 1.15, size=4)
    if severity is None:
        severity = drawn_severity if features else 0.0
    if severity < 0.0:
        raise ValueError(f"severity must be >= 0, got {severity}")
    strengths = {feature: float(severity * variation[i]) for i, feature in enumerate(features) if severity > 0.0}
    return Subject(traits=traits, appearance=appearance, scene=scene, severity=float(severity), strengths=strengths)
