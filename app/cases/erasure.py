"""A case's erasure, by registration: each domain says what erasing a case means for its own data.

The cases domain knows no domain above it. A domain registers, at import time (:mod:`app.hooks` imports
them all), any of:

* ``guard(session, case) -> Refusal | None``: a reason to refuse the erasure (a rating study holds the case);
* ``purge(session, erasure)``: delete the domain's rows derived from the case and name the files they held
  (``erasure.unlink(path)``, ``erasure.remove_tree(path)``) — inside the erasure's transaction;
* ``after_commit()``: forget what the process keeps in memory (a results cache), once the rows are gone.

:func:`app.cases.service.delete_case` runs the guards, then the purges, then deletes the case row; the caller
commits and only then calls :meth:`Erasure.finish`, which removes the case's folder, every file and folder
the purges named, and runs the after-commit hooks. A failed commit therefore never leaves rows whose files
are gone. Example::

    from app.cases.erasure import register_erasure

    def purge(session, erasure):
        for row in session.scalars(select(Thing).where(Thing.case_id == erasure.case_id)):
            erasure.unlink(data_dir / row.path)
            session.delete(row)

    register_erasure("things", purge=purge)
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.errors import DomainError


@dataclass(frozen=True)
class Refusal:
    """Why a case cannot be erased now: the JSON error ``{"detail", "code"}`` with its status."""

    code: str
    detail: str
    status: int = 409


class ErasureRefused(DomainError):
    """A guard refused: the JSON error contract answers it with the refusal's status and code."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code, refusal.detail, refusal.status)
        self.refusal = refusal


@dataclass
class Erasure:
    """One case's erasure in progress: what to remove once the transaction has committed."""

    case_id: str
    store: PhotoStore
    data_dir: Path
    files: list[Path] = field(default_factory=list)
    trees: list[Path] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def unlink(self, path: Path) -> None:
        self.files.append(path)

    def unlink_stored(self, relative: str) -> None:
        """A file of the photo store, given by its stored relative path (e.g. a map in another case's folder)."""
        with contextlib.suppress(ValueError):  # a path outside the store is never followed
            self.files.append(self.store.path(relative))

    def remove_tree(self, path: Path) -> None:
        self.trees.append(path)

    def finish(self) -> None:
        """After the commit: the case's folder, the files and folders the domains named, their callbacks."""
        self.store.remove_case(self.case_id)
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        for path in self.trees:
            shutil.rmtree(path, ignore_errors=True)
        for callback in self.callbacks:
            callback()


Guard = Callable[[Session, Case], Refusal | None]
Purge = Callable[[Session, Erasure], None]


@dataclass(frozen=True)
class ErasureHook:
    name: str
    guard: Guard | None = None
    purge: Purge | None = None
    after_commit: Callable[[], None] | None = None


_HOOKS: dict[str, ErasureHook] = {}


def register_erasure(name: str, *, guard: Guard | None = None, purge: Purge | None = None,
                     after_commit: Callable[[], None] | None = None) -> None:
    """Register (or, under the same name, replace: module reloads) one domain's part of an erasure."""
    _HOOKS[name] = ErasureHook(name, guard, purge, after_commit)


def erasure_hooks() -> list[ErasureHook]:
    return list(_HOOKS.values())


def refusal(session: Session, case: Case) -> Refusal | None:
    """The first registered guard's reason to refuse erasing ``case``, or None."""
    for hook in erasure_hooks():
        if hook.guard is not None and (reason := hook.guard(session, case)) is not None:
            return reason
    return None


def purge(session: Session, case: Case, erasure: Erasure) -> None:
    """Run every guard (raising :class:`ErasureRefused`) and every purge; queue the after-commit hooks."""
    if (reason := refusal(session, case)) is not None:
        raise ErasureRefused(reason)
    for hook in erasure_hooks():
        if hook.purge is not None:
            hook.purge(session, erasure)
        if hook.after_commit is not None:
            erasure.callbacks.append(hook.after_commit)
