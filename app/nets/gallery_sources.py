"""What a gallery is built from: a folder per syndrome or a CSV, read into :class:`PhotoSource` rows.

**Gallery ids are pseudonyms unless the lab gives them.** A gallery row's ``image_id`` and ``subject_id`` are
shown to every clinician (``/predict``'s ``suggested_syndromes_list``, each case's ranking), and a lab's file
names carry whatever the lab typed ("Doe, John MRN-4711.jpg"); the upload intake never stores a file name, and
the gallery must not publish one either. So ids *derived from file names* (the folder layout's file and stem, a
CSV row's path, a CSV without ``subject_id``) become keyed pseudonyms, ``img-<16 hex>`` and ``subj-<16 hex>``:
HMAC-SHA256 under a random key kept in the model folder (``gallery_id_key``, mode 600, made on first use). The
key makes them stable (adding photos later, removing a subject by the name the admin knows) without letting
anyone confirm a guessed name, which a plain hash would. Ids the lab *states* in the CSV (``image_id``,
``subject_id`` columns — GestaltMatcher Database ids, say) are kept as given: the lab chose to publish them.
The original names stay on the server for the admins: the provenance file lists skipped photos by their source
name, and ``gallery remove`` accepts either the source name or the pseudonym.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from app.nets.card import Gene, Label
from app.nets.errors import ModelFolderError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff"}
CSV_COLUMNS = ("path", "syndrome_id", "syndrome_name", "omim", "gene", "subject_id", "image_id")
ID_KEY_FILE = "gallery_id_key"
_OMIM = re.compile(r"^(?:OMIM:)?\s*([0-9]{6})$", re.IGNORECASE)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:+()/-]{0,63}$")


class RefusedRows(ModelFolderError):
    """Rows of the input that cannot be built from; nothing was encoded or written."""

    def __init__(self, problems: Sequence[str]) -> None:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        super().__init__(f"{len(problems)} row(s) refused, nothing was written: {shown}")
        self.problems = list(problems)


@dataclass(frozen=True)
class PhotoSource:
    """One photo to add: where it is, what it shows, its public ids and the name the lab knows it by."""

    path: Path
    image_id: str  # public: a pseudonym, or the CSV's stated image_id
    label: Label
    subject_id: str  # public, likewise
    source: str = ""  # the lab's name for it (folder/file or the CSV's path): admin messages and provenance only

    @property
    def name(self) -> str:
        return self.source or self.image_id


KEY_BYTES = 32


def id_key(model_folder: Path) -> bytes:
    """The model folder's key for gallery pseudonyms, made (random, mode 600) on first use. Written whole under a
    temporary name and linked into place, so a crash or a full disk never leaves an empty key (under which the
    pseudonyms would be plain hashes anyone could confirm), and two builds at once agree on one key."""
    path = Path(model_folder) / ID_KEY_FILE
    if not path.exists():
        descriptor, temporary = tempfile.mkstemp(prefix=".gallery_id_key-", dir=model_folder)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            with contextlib.suppress(FileExistsError):  # another build linked its key first: use that one
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise ModelFolderError(f"{path.name} does not hold a {KEY_BYTES}-byte hex key; restore it from a backup "
                               "(the gallery's pseudonyms were made with it) or rebuild the gallery without it")
    return key


def pseudonym(key: bytes, kind: str, name: str) -> str:
    """``img-…`` / ``subj-…``: the keyed pseudonym of a source name (``kind``: ``image`` or ``subject``)."""
    digest = hmac.new(key, f"{kind}\0{name}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"{'img' if kind == 'image' else 'subj'}-{digest}"


# ---------------------------------------------------------------- reading the input

def _omim(value: str, where: str, problems: list[str]) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    match = _OMIM.match(value)
    if match is None:
        problems.append(f"{where}: OMIM id {value[:20]!r} is not six digits")
        return None
    return match.group(1)


def read_csv_sources(path: Path, key: bytes) -> list[PhotoSource]:
    """Rows of a gallery CSV; raises :class:`RefusedRows` listing every bad row (nothing is half-read).
    A row without ``image_id`` / ``subject_id`` gets pseudonyms of its path / file stem under ``key``."""
    path = Path(path)
    base = path.parent.resolve()
    problems: list[str] = []
    sources: list[PhotoSource] = []
    labels: dict[str, Label] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("path", "syndrome_id") if c not in (reader.fieldnames or [])]
            if missing:
                raise RefusedRows([f"{path.name} has no column {', '.join(missing)} "
                                   f"(columns: {', '.join(CSV_COLUMNS)})"])
            for number, row in enumerate(reader, start=2):
                where = f"line {number}"
                raw = (row.get("path") or "").strip()
                syndrome_id = (row.get("syndrome_id") or "").strip()
                if not raw or not syndrome_id:
                    problems.append(f"{where}: path and syndrome_id are required")
                    continue
                if not _ID.match(syndrome_id):
                    problems.append(f"{where}: syndrome_id {syndrome_id[:40]!r} has characters outside "
                                    "A-Z 0-9 ._:+()/-")
                    continue
                photo = (base / raw).resolve()
                if base not in photo.parents:
                    problems.append(f"{where}: {raw!r} is outside the CSV's folder")
                    continue
                omim = _omim(row.get("omim") or "", where, problems)
                genes = tuple(Gene(name=g.strip(), entrez=None)
                              for g in (row.get("gene") or "").split(";") if g.strip())
                label = Label(id=syndrome_id, name=(row.get("syndrome_name") or "").strip() or syndrome_id,
                              omim=omim, genes=genes)
                known = labels.setdefault(syndrome_id, label)
                if (known.name, known.omim) != (label.name, label.omim) and (label.name != syndrome_id or label.omim):
                    problems.append(f"{where}: syndrome {syndrome_id!r} is named or numbered differently on an "
                                    "earlier line")
                    continue
                if label.genes and not known.genes:
                    labels[syndrome_id] = replace(known, genes=label.genes)
                source = raw.replace("\\", "/")
                stated = (row.get("image_id") or "").strip()
                if stated and not _ID.match(stated):
                    problems.append(f"{where}: image_id {stated[:40]!r} has characters outside A-Z 0-9 ._:+()/-")
                    continue
                subject = (row.get("subject_id") or "").strip() or pseudonym(key, "subject", Path(raw).stem)
                sources.append(PhotoSource(path=photo, image_id=stated or pseudonym(key, "image", source),
                                           label=known, subject_id=subject, source=source))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RefusedRows([f"{path.name} cannot be read as a UTF-8 CSV: {exc}"]) from exc
    sources = [replace(s, label=labels[s.label.id]) for s in sources]
    _check_duplicates(sources, problems)
    if problems:
        raise RefusedRows(problems)
    return sources


def read_folder_sources(root: Path, key: bytes) -> list[PhotoSource]:
    """``root/<syndrome id>/<subject>.<ext>``: one folder per syndrome; the file stem names the subject. The
    public ids are pseudonyms of ``<syndrome id>/<file>`` and of the stem under ``key``."""
    root = Path(root)
    problems: list[str] = []
    sources: list[PhotoSource] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _ID.match(folder.name):
            problems.append(f"folder {folder.name[:40]!r}: a syndrome id has only A-Z 0-9 ._:+()/-")
            continue
        label = Label(id=folder.name, name=folder.name.replace("_", " "))
        for photo in sorted(folder.iterdir()):
            if photo.is_file() and photo.suffix.lower() in PHOTO_SUFFIXES:
                source = f"{folder.name}/{photo.name}"
                sources.append(PhotoSource(path=photo, image_id=pseudonym(key, "image", source), label=label,
                                           subject_id=pseudonym(key, "subject", photo.stem), source=source))
    _check_duplicates(sources, problems)
    if problems:
        raise RefusedRows(problems)
    if not sources:
        raise RefusedRows([f"{root} has no syndrome folders with photos ({', '.join(sorted(PHOTO_SUFFIXES))})"])
    return sources


def read_sources(photos: Path, key: bytes) -> list[PhotoSource]:
    return read_csv_sources(photos, key) if Path(photos).is_file() else read_folder_sources(photos, key)


def existing_key(model_folder: Path) -> bytes | None:
    """The folder's pseudonym key if a build made one (removing rows never makes one)."""
    return id_key(model_folder) if (Path(model_folder) / ID_KEY_FILE).is_file() else None


def resolve_names(names: Sequence[str], known: set[str], kind: str,
                  key: bytes | None) -> tuple[list[str], list[str]]:
    """The stored ids an admin means by ``names`` (a stored id, or the source name it was made from) and the
    problems for names that are neither."""
    found, problems = [], []
    for name in names:
        # both: a gallery extended after ids were pseudonymised can hold one photo or person under each
        stored = [n for n in (name, pseudonym(key, kind, name) if key is not None else None) if n in known]
        if stored:
            found.extend(stored)
        else:
            problems.append(f"{kind} {name!r} is not in the gallery")
    return found, problems


def _check_duplicates(sources: Sequence[PhotoSource], problems: list[str]) -> None:
    counts = Counter(s.image_id for s in sources)
    names = {s.image_id: s.name for s in sources}
    problems.extend(f"image {names[image_id]!r} is listed {n} times" for image_id, n in counts.items() if n > 1)


