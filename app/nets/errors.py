"""The one error a model folder raises when it cannot be served.

A model folder is a contract between whoever trained the network and the app that ranks syndromes with
it: card, labels, weights and gallery must agree. When they do not, a silently wrong ranking is far worse
than a refusal, so every disagreement is raised as :class:`ModelFolderError` with a sentence naming the
file and the mismatch (for example ``labels.json has 9 labels but the card says num_classes 8``) — the
person deploying the model has to be able to fix it from the message alone.
"""

from __future__ import annotations

from pathlib import Path


class ModelFolderError(ValueError):
    """A model folder whose card, labels, weights or gallery are missing, malformed or inconsistent."""

    def __init__(self, message: str, *, folder: Path | None = None) -> None:
        self.message: str = message
        self.folder: Path | None = folder
        super().__init__(f"{folder}: {message}" if folder is not None else message)
