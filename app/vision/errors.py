"""Errors raised while taking in a photo and finding the face in it.

One exception type carries everything the web layer needs to answer an upload: a stable machine code
(part of the HTTP contract), a sentence a clinician can act on, the HTTP status, and structured extras
(for ``multiple_faces`` the list of faces to choose from). Keeping the status next to the code here means
the web layer cannot drift from the contract by mapping codes itself: it is a :class:`app.errors.DomainError`
(a stdlib-only module, so the ML core may use it), which the web layer's one handler answers.
"""

from __future__ import annotations

from typing import Any

from app.errors import DomainError

#: Every code this package raises, with its HTTP status.  The codes are part of the public HTTP contract.
STATUS_BY_CODE: dict[str, int] = {
    "unsupported_type": 415,
    "too_large": 413,
    "corrupt_image": 422,
    "image_too_large": 413,
    "no_face": 422,
    "multiple_faces": 422,
    "face_too_small": 422,
    "invalid_face_index": 422,
}


class IntakeError(DomainError):
    """A photo that cannot be used, and why.

    ``detail`` says what is wrong and what to do about it; it is shown to users verbatim, so it never
    contains internals such as stack traces or library messages.
    """

    def __init__(self, code: str, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown intake error code {code!r}")
        super().__init__(code, detail, STATUS_BY_CODE[code], **dict(extra or {}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body of the HTTP contract: ``{"detail", "code"}`` plus any extras."""
        return {"detail": self.detail, "code": self.code, **self.extra}

    def __repr__(self) -> str:
        return f"IntakeError(code={self.code!r}, detail={self.detail!r})"
