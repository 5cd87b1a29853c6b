"""Upload bytes -> de-identified photo -> chosen face -> aligned 112x112 crop.

This is the one entry point the web layer, the CLI and the workers call, so the rules about which face
is analysed live here: exactly one face, or the client names one (``face_index``) from the list it was
given; faces too small to carry facial gestalt are refused rather than analysed badly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from app.vision.align import AlignedFace, align_face
from app.vision.detect import Face, FaceDetector
from app.vision.errors import IntakeError
from app.vision.intake import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Photo, load_photo

# Below these sizes the 112x112 crop is an upsampled blur: the network would classify interpolation
# artefacts, and its explanations would highlight them.
MIN_FACE_BOX_PX = 40.0
MIN_INTEROCULAR_PX = 16.0


@dataclass(frozen=True, eq=False)
class ProcessedPhoto:
    """Everything the app keeps about one uploaded photo's face.

    ``faces`` are the detections as listed to the client (indices match ``face_index``); ``face`` is the
    chosen one after roll correction, whose landmarks produced ``aligned``.
    """

    photo: Photo
    faces: list[Face]
    face_index: int
    face: Face
    aligned: AlignedFace


@lru_cache(maxsize=1)
def default_detector() -> FaceDetector:
    """The process-wide detector (safe to share across threads; see FaceDetector)."""
    return FaceDetector()


def process_photo(
    data: bytes,
    *,
    face_index: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    detector: FaceDetector | None = None,
    roll_correction: bool = True,
    most_confident: bool = False,
) -> ProcessedPhoto:
    """Decode, detect, choose, roll-correct and align. Raises :class:`IntakeError` with a contract code.

    ``roll_correction=False`` aligns from the first-pass landmarks; it exists for benchmarks and tests
    that show what the correction buys. ``most_confident=True`` takes the detector's most confident face
    when there are several instead of asking the client to choose: the GestaltMatcher-service routes do
    that, because the service's clients have no way to choose.
    """
    photo = load_photo(data, max_pixels=max_pixels, max_side=max_side)
    detector = detector or default_detector()
    faces = detector.detect(photo.rgb)
    if most_confident and face_index is None and len(faces) > 1:
        face_index = max(range(len(faces)), key=lambda i: faces[i].score)
    index = _choose(faces, face_index, image_size=(photo.width, photo.height))
    chosen = faces[index]
    if roll_correction:
        chosen = detector.correct_roll(photo.rgb, chosen)
    # Measured after roll correction: on a tilted face the first-pass landmarks can be badly off (a face
    # turned by 90 degrees reads as having its eyes 11 px apart instead of 45), the corrected ones are not.
    _check_size(chosen)
    aligned = align_face(photo.rgb, chosen.landmarks)
    return ProcessedPhoto(photo=photo, faces=faces, face_index=index, face=chosen, aligned=aligned)


def _choose(faces: list[Face], face_index: int | None, *, image_size: tuple[int, int]) -> int:
    """The face to align. ``image_size`` goes into ``multiple_faces`` so clients can draw the boxes."""
    if not faces:
        raise IntakeError(
            "no_face",
            "No face was found in the photo. Upload a frontal photo in which the whole face is visible, "
            "well lit and not covered.",
        )
    if face_index is None:
        if len(faces) == 1:
            return 0
        listed = [
            {"index": i, "box": [round(float(v), 1) for v in face.box], "score": round(face.score, 4)}
            for i, face in enumerate(faces)
        ]
        raise IntakeError(
            "multiple_faces",
            f"{len(faces)} faces were found. Choose the patient's face and send the photo again with "
            f"face_index (0 to {len(faces) - 1}), or crop the photo to the patient.",
            extra={"faces": listed, "image_size": list(image_size)},
        )
    if isinstance(face_index, bool) or not isinstance(face_index, int) or not 0 <= face_index < len(faces):
        raise IntakeError(
            "invalid_face_index",
            f"face_index {face_index!r} does not name a face: {len(faces)} face(s) were found, "
            f"so it must be between 0 and {len(faces) - 1}.",
        )
    return face_index


def _check_size(face: Face) -> None:
    width, height = face.box[2], face.box[3]
    if min(width, height) < MIN_FACE_BOX_PX or face.interocular < MIN_INTEROCULAR_PX:
        raise IntakeError(
            "face_too_small",
            f"The face is only about {min(width, height):.0f} pixels across (eyes {face.interocular:.0f} "
            f"pixels apart); at least {MIN_FACE_BOX_PX:.0f} pixels across and {MIN_INTEROCULAR_PX:.0f} "
            "between the eyes are needed. Upload a closer or higher-resolution photo.",
        )
