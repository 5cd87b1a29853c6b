"""Case files on disk: ``<data_dir>/photos/<case id>/{photo.jpg, aligned.png, maps/<explanation id>.npy}``.

Only de-identified, re-encoded bytes are written; original uploads and their file names never touch the
disk. Writes go to a temporary name and are renamed, so a crash never leaves a half-written photo.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class PhotoStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def case_dir(self, case_id: str) -> Path:
        if not case_id.isalnum():
            raise ValueError("case ids are alphanumeric")
        return self.root / case_id

    def write(self, case_id: str, name: str, data: bytes) -> str:
        """Write one file atomically; returns its path relative to the store root."""
        target = self.case_dir(case_id) / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ValueError("file names stay inside the case folder")
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"{case_id}/{name}"

    def path(self, relative: str) -> Path:
        resolved = (self.root / relative).resolve()
        if self.root.resolve() not in resolved.parents:
            raise ValueError("path escapes the photo store")
        return resolved

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def case_folders(self) -> list[tuple[str, float]]:
        """(case id, last modification time) of every case folder on disk."""
        if not self.root.is_dir():
            return []
        return [(entry.name, entry.stat().st_mtime) for entry in os.scandir(self.root)
                if entry.is_dir(follow_symlinks=False) and entry.name.isalnum()]

    def remove_case(self, case_id: str) -> None:
        shutil.rmtree(self.case_dir(case_id), ignore_errors=True)
