"""The served model, loaded once per process on first use.

A missing or broken model folder must not take photo intake down with it: cases are still created and
aligned, and a ranking that is unavailable says so. *Why* (a path, a checksum, an exception) goes to the server
log and :attr:`ModelProvider.reason` only: ``/status`` answers without authentication, and no user needs the
server's file layout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from app.nets.errors import ModelFolderError
from app.nets.registry import LoadedModel, load_model

log = logging.getLogger("gestaltlens.models")


class ModelUnavailable(RuntimeError):
    """The configured model cannot be served; the message is safe to show anyone (no paths, no checksums)."""


class ModelProvider:
    def __init__(self, root: Path, model_id: str) -> None:
        self.root = root
        self.model_id = model_id
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._error: str | None = None
        self._preloading = False

    @property
    def reason(self) -> str | None:
        """Why the model could not be loaded, in full (for the log and operators), or None."""
        return self._error

    def public_problem(self) -> str:
        return (f"The model {self.model_id!r} cannot be loaded: its folder is missing, damaged or unreadable. "
                "The server log says which.")

    def state(self) -> str:
        """``ok``, ``unavailable`` (why: :attr:`reason`), ``loading`` or ``not_loaded``; never waits."""
        if self._model is not None:
            return "ok"
        if self._error is not None:
            return "unavailable"
        return "loading" if self._preloading or self._lock.locked() else "not_loaded"

    def preload(self) -> threading.Thread:
        """Start reading the model in a daemon thread (see ``Settings.preload_model``); a failure is kept and
        logged exactly as on first use, so the requests that need the model answer with its reason."""

        def load() -> None:
            try:
                with contextlib.suppress(ModelUnavailable):  # logged; requests answer 503 model_unavailable
                    self.get()
            finally:
                self._preloading = False

        self._preloading = True  # "loading" from now on, not from when the thread first takes the lock
        thread = threading.Thread(target=load, name=f"preload-{self.model_id}", daemon=True)
        thread.start()
        return thread

    def get(self) -> LoadedModel:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None and self._error is None:
                try:
                    self._model = load_model(self.root, self.model_id)
                except (ModelFolderError, FileNotFoundError) as exc:
                    self._error = f"model {self.model_id!r} cannot be loaded: {exc}"
                    log.error(self._error)
                except Exception as exc:  # the gallery's search index, faiss, memory, permissions…
                    # Kept like a broken folder: requests answer 503 with the reason instead of a 500 each, and no
                    # request starts another load of minutes (a large gallery's index) while holding the lock.
                    self._error = f"model {self.model_id!r} cannot be loaded: {type(exc).__name__}: {exc}"
                    log.exception(self._error)
        if self._model is None:
            raise ModelUnavailable(self.public_problem())
        return self._model
