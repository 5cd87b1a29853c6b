"""Building a model's gallery from a lab's own photos: ``gestaltlens gallery build / add / remove / list``.

A gallery is the model's clinical face phenotype space (DESIGN.md, "Matching"): embeddings of diagnosed
faces with syndrome, OMIM id, gene and subject id. It must be encoded exactly as a query is, or distances
compare different things, so every photo goes through the upload intake (:func:`process_photo`: type by
content, de-identification, detection, roll correction, alignment; several faces are refused, because a
gallery row must be the patient) and is encoded with the model's own views (members × test-time
augmentations) by :func:`app.nets.predict.encode_query`.

Input (:mod:`app.nets.gallery_sources`): a folder with one sub-folder per syndrome (the folder name is the
syndrome id and name; the file stem names the subject), or a CSV with the columns ``path, syndrome_id,
syndrome_name, omim, gene, subject_id, image_id`` (paths relative to the CSV; ``gene`` may list several genes
separated by ``;``). Ids made from file names are published as keyed pseudonyms (``img-…``, ``subj-…``); ids
the CSV states are kept (see that module).

What is written into the model folder (nothing else changes):

* ``gallery-<digest>.npz`` — ``embeddings`` (N, 512) or (N, V, 512), ``labels``, ``image_ids``,
  ``subject_ids`` (see :mod:`app.nets.gallery`);
* ``gallery_labels-<digest>.json`` — every syndrome of the gallery (labels.json's format), so syndromes
  the head never learnt — or every syndrome, for an imported network without a head — still rank;
* ``gallery_provenance-<digest>.json`` — counts per syndrome and per subject, every skipped photo with the
  reason, which model version and views encoded it, when, and the search index (``search_index``);
* ``gallery-<digest>.ivf.faiss`` — only for a gallery large enough for the approximate search index
  (:data:`app.nets.search.APPROXIMATE_FROM` rows): that index, trained now (minutes at a million rows) so
  that the server loads it instead of training it on a clinician's first ranking; its header records the
  gallery file's sha256 (:mod:`app.nets.gallery_index`). ``remove`` writes a new gallery and so a new index,
  or none when the gallery shrank below the threshold;
* ``gallery_id_key`` — the key of the gallery's pseudonymous ids (:mod:`app.nets.gallery_sources`), made by the
  first build (even one that is then refused) and kept for every later one;
* ``model.json`` — pointing at the gallery, its labels and provenance (and their sha256 when the card lists
  digests). The index is found by the gallery's name and proven by its digest, not listed in the card.

Atomicity: the new files get new names and are complete on disk before ``model.json`` is replaced (an
``os.replace``, atomic on POSIX), which is the single commit point; only then are the old gallery files
removed (with the old gallery's index). A crash or a refused row leaves the served gallery exactly as it
was; the index is written to a temporary name and renamed too, and a failure removes it with the other new
files. A CSV row that cannot be read (no syndrome id, a path outside the CSV's folder, a malformed OMIM id,
a duplicate image) refuses the whole build before any photo is encoded. A photo the intake refuses is
skipped and listed with its reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.nets.card import Label
from app.nets.errors import ModelFolderError
from app.nets.gallery import build_gallery, write_gallery
from app.nets.gallery_index import describe as describe_index
from app.nets.gallery_index import index_file, write_index
from app.nets.gallery_sources import (
    PhotoSource,
    RefusedRows,
    existing_key,
    id_key,
    read_sources,
    resolve_names,
)
from app.nets.registry import LoadedModel, read_model_folder, sha256_file

__all__ = [
    "BuildReport",
    "GalleryRow",
    "PhotoSource",
    "RefusedRows",
    "add_photos",
    "build",
    "gallery_summary",
    "remove_rows",
]


@dataclass(frozen=True)
class GalleryRow:
    image_id: str
    syndrome_id: str
    subject_id: str
    embedding: np.ndarray  # (V, 512) float32


@dataclass
class BuildReport:
    folder: Path
    added: int = 0
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    rows: int = 0
    syndromes: int = 0
    seconds: float = 0.0
    index: str | None = None  # the saved search index file, None when the gallery is scanned exactly

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "added": self.added, "removed": self.removed, "rows": self.rows,
                "syndromes": self.syndromes, "skipped": self.skipped, "index": self.index,
                "seconds": round(self.seconds, 2),
                "photos_per_minute": round(60.0 * (self.added + len(self.skipped)) / self.seconds, 1)
                if self.seconds > 0 else None}


# ---------------------------------------------------------------- encoding

def encode_sources(
    model: LoadedModel,
    sources: Sequence[PhotoSource],
    *,
    process: Callable[[bytes], Any] | None = None,
    progress: bool = True,
) -> tuple[list[GalleryRow], list[dict[str, str]]]:
    """Encode every photo with the upload intake and the model's views; skipped photos with their reason."""
    from tqdm import tqdm

    from app.nets.predict import encode_query
    from app.vision.errors import IntakeError
    from app.vision.pipeline import process_photo

    process = process or process_photo
    rows: list[GalleryRow] = []
    skipped: list[dict[str, str]] = []
    for source in tqdm(sources, desc="encoding gallery photos", unit="photo", disable=not progress):
        try:
            data = source.path.read_bytes()
        except OSError as exc:
            skipped.append({"image_id": source.image_id, "source": source.name, "code": "unreadable",
                            "reason": f"cannot be read: {exc.strerror}"})
            continue
        try:
            processed = process(data)
        except IntakeError as exc:
            reason = {"no_face": "no face", "multiple_faces": "several faces"}.get(exc.code, exc.code.replace("_", " "))
            skipped.append({"image_id": source.image_id, "source": source.name, "code": exc.code, "reason": reason})
            continue
        _, views = encode_query(model, processed.aligned.crop)
        rows.append(GalleryRow(image_id=source.image_id, syndrome_id=source.label.id, subject_id=source.subject_id,
                               embedding=np.asarray(views, dtype=np.float32)))
    return rows, skipped


# ---------------------------------------------------------------- the stored gallery

@dataclass
class _Stored:
    rows: list[GalleryRow]
    labels: dict[str, Label]
    skipped: list[dict[str, str]]
    sources: list[str]


def _read_stored(model: LoadedModel) -> _Stored:
    """The current gallery of the folder as plain rows (raw embeddings, as stored)."""
    card = model.card
    if not card.gallery:
        return _Stored([], {}, [], [])
    with np.load(model.folder / card.gallery, allow_pickle=False) as archive:
        embeddings = np.asarray(archive["embeddings"], dtype=np.float32)
        labels = archive["labels"].astype(str)
        image_ids = archive["image_ids"].astype(str)
        subjects = archive["subject_ids"].astype(str) if "subject_ids" in archive.files else image_ids
    if embeddings.ndim == 2:
        embeddings = embeddings[:, None, :]
    rows = [GalleryRow(str(i), str(s), str(subject), e)
            for i, s, subject, e in zip(image_ids, labels, subjects, embeddings, strict=True)]
    by_id = {label.id: label for label in (*model.labels, *model.gallery_labels)}
    provenance = _read_provenance(model)
    return _Stored(rows, {row.syndrome_id: by_id[row.syndrome_id] for row in rows}, provenance.get("skipped", []),
                   provenance.get("sources", []))


def _read_provenance(model: LoadedModel) -> dict[str, Any]:
    name = model.card.extra.get("gallery_provenance")
    if not name or not (model.folder / str(name)).is_file():
        return {}
    try:
        data = json.loads((model.folder / str(name)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def provenance_of(model: LoadedModel) -> dict[str, Any]:
    """The provenance file of the served gallery (empty when the gallery was not built by this command)."""
    return _read_provenance(model)


def _provenance(model: LoadedModel, rows: Sequence[GalleryRow], labels: dict[str, Label],
                skipped: list[dict[str, str]], sources: list[str],
                index: dict[str, Any] | None = None) -> dict[str, Any]:
    per_syndrome: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = per_syndrome.setdefault(row.syndrome_id, {"images": 0, "subjects": Counter()})
        entry["images"] += 1
        entry["subjects"][row.subject_id] += 1
    return {
        "format": "gestaltlens-gallery/1",
        "model": model.version,
        "views": int(rows[0].embedding.shape[0]) if rows else model.views,
        "view_order": "member x flip x grey (app.nets.ensemble)",
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "images": len(rows),
        "subjects": len({row.subject_id for row in rows}),
        "syndromes": {
            sid: {"name": labels[sid].name, "omim": labels[sid].omim, "genes": [g.name for g in labels[sid].genes],
                  "images": e["images"], "subjects": len(e["subjects"]), "per_subject": dict(e["subjects"])}
            for sid, e in sorted(per_syndrome.items())
        },
        "skipped": skipped,
        "sources": sources,
        # the saved approximate search index (None: the gallery is small enough to be scanned exactly)
        "search_index": index,
    }


def _write_json_file(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _commit(model: LoadedModel, rows: Sequence[GalleryRow], labels: dict[str, Label],
            skipped: list[dict[str, str]], sources: list[str], *, approximate_from: int | None = None) -> str | None:
    """Write the new files under new names (the search index too, for a large gallery), then replace
    model.json atomically, then drop the old files. Returns the index file's name, or None."""
    folder, card = model.folder, model.card
    old = {str(card.gallery or ""), str(card.extra.get("gallery_labels") or ""),
           str(card.extra.get("gallery_provenance") or "")} - {""}
    if card.gallery:
        old.add(index_file(folder / card.gallery).name)
    index_name = None
    if not rows:  # an empty gallery is no gallery: ranking falls back to the head
        new_extra = {k: v for k, v in card.extra.items()
                     if k not in ("gallery_labels", "gallery_provenance", "gallery_version")}
        new_card = replace(card, gallery=None, extra=new_extra,
                           sha256={k: v for k, v in card.sha256.items() if k not in old})
        written: list[Path] = []
    else:
        used = [labels[sid] for sid in dict.fromkeys(row.syndrome_id for row in rows)]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        digest = hashlib.sha256("\n".join(r.image_id for r in rows).encode() + stamp.encode()).hexdigest()[:8]
        names = (f"gallery-{digest}.npz", f"gallery_labels-{digest}.json", f"gallery_provenance-{digest}.json")
        written = [folder / n for n in names]
        embeddings = np.stack([row.embedding for row in rows])
        if embeddings.shape[1] == 1:
            embeddings = embeddings[:, 0, :]
        try:
            write_gallery(written[0], embeddings, [r.syndrome_id for r in rows], [r.image_id for r in rows],
                          [r.subject_id for r in rows])
            with written[0].open("rb") as handle:
                os.fsync(handle.fileno())
            written.append(index_file(written[0]))  # removed on failure, whether or not it was written
            gallery = build_gallery(embeddings, [r.syndrome_id for r in rows], [r.image_id for r in rows], used)
            index = write_index(gallery, written[0], approximate_from=approximate_from)
            index_name = index.name if index is not None else None
            _write_json_file(written[1], [label.to_json() for label in used])
            _write_json_file(written[2], _provenance(model, rows, labels, skipped, sources,
                                                     describe_index(index) if index is not None else None))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        extra = {**card.extra, "gallery_labels": names[1], "gallery_provenance": names[2],
                 "gallery_version": stamp[:8]}
        sha = {k: v for k, v in card.sha256.items() if k not in old}
        if card.sha256:  # a card that pins its files pins the gallery too
            sha.update({n: sha256_file(folder / n) for n in names[:2]})
        new_card = replace(card, gallery=names[0], extra=extra, sha256=sha)
    handle, temporary = tempfile.mkstemp(prefix=".model-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(new_card.to_json(), indent=2, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        read_model_folder_with(folder, Path(temporary))  # the registry accepts the new state before it is served
        os.replace(temporary, folder / "model.json")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        for path in written:
            path.unlink(missing_ok=True)
        raise
    for name in old - {p.name for p in written}:
        (folder / name).unlink(missing_ok=True)
    return index_name


def read_model_folder_with(folder: Path, card_file: Path) -> LoadedModel:
    """Check a folder as it would be with ``card_file`` as its model.json (in a scratch copy of links)."""
    with tempfile.TemporaryDirectory(prefix=".check-", dir=folder) as scratch:
        root = Path(scratch) / folder.name  # the card's id must match its folder's name
        root.mkdir()
        for item in folder.iterdir():
            if item.is_file() and item.name != "model.json" and not item.name.startswith(".model-"):
                os.symlink(item.resolve(), root / item.name)
        os.symlink(Path(card_file).resolve(), root / "model.json")
        return read_model_folder(root)


# ---------------------------------------------------------------- commands

def _labels_for(model: LoadedModel, sources: Iterable[PhotoSource], existing: dict[str, Label]) -> dict[str, Label]:
    """A syndrome the head knows keeps the head's name, OMIM id and genes; others come from the input."""
    head = {label.id: label for label in model.labels} if model.has_head else {}
    labels = dict(existing)
    for source in sources:
        labels.setdefault(source.label.id, head.get(source.label.id, source.label))
    return labels


def build(model_folder: Path, photos: Path, *, progress: bool = True, replace_all: bool = True,
          process: Callable[[bytes], Any] | None = None, approximate_from: int | None = None) -> BuildReport:
    """Build (or, with ``replace_all=False``, extend) the gallery of ``model_folder`` from ``photos``, and its
    search index when it has ``approximate_from`` rows of 512 floats or more (default
    :data:`app.nets.search.APPROXIMATE_FROM`)."""
    import time

    started = time.perf_counter()
    model = read_model_folder(model_folder)
    sources = read_sources(photos, id_key(model_folder))
    stored = _Stored([], {}, [], []) if replace_all else _read_stored(model)
    held = {r.image_id for r in stored.rows}
    # A gallery built before ids were pseudonymised holds source names as ids: those count as clashes too, and a
    # subject it already knows by its name keeps that id, so one person is not split in two.
    clash = sorted(s.name for s in sources if s.image_id in held or s.source in held)
    known_subjects = {r.subject_id for r in stored.rows}
    sources = [replace(s, subject_id=Path(s.source).stem)
               if s.source and Path(s.source).stem in known_subjects and s.subject_id.startswith("subj-") else s
               for s in sources]
    if clash:
        raise RefusedRows([f"image {name!r} is already in the gallery (remove it first)" for name in clash])
    labels = _labels_for(model, sources, stored.labels)
    rows, skipped = encode_sources(model, sources, progress=progress, process=process)
    if stored.rows and rows and stored.rows[0].embedding.shape != rows[0].embedding.shape:
        raise ModelFolderError("the stored gallery was encoded with another number of views; rebuild it")
    all_rows = stored.rows + rows
    if not all_rows:
        raise ModelFolderError("no photo could be encoded; the gallery was left as it was: "
                               + "; ".join(f"{s.get('source', s['image_id'])}: {s['reason']}" for s in skipped[:5]))
    index = _commit(model, all_rows, labels, stored.skipped + skipped, [*stored.sources, str(photos)],
                    approximate_from=approximate_from)
    return BuildReport(folder=Path(model_folder), added=len(rows), skipped=skipped, rows=len(all_rows),
                       syndromes=len({r.syndrome_id for r in all_rows}), seconds=time.perf_counter() - started,
                       index=index)


def add_photos(model_folder: Path, photos: Path, *, progress: bool = True,
               process: Callable[[bytes], Any] | None = None, approximate_from: int | None = None) -> BuildReport:
    return build(model_folder, photos, progress=progress, replace_all=False, process=process,
                 approximate_from=approximate_from)


def remove_rows(model_folder: Path, *, image_ids: Sequence[str] = (), subject_ids: Sequence[str] = (),
                syndrome_ids: Sequence[str] = (), approximate_from: int | None = None) -> BuildReport:
    """Remove images, every image of some subjects, or whole syndromes; unknown names are refused. The
    gallery is rewritten, so its search index is rebuilt for the rows left (or dropped below the threshold)."""
    model = read_model_folder(model_folder)
    stored = _read_stored(model)
    key = existing_key(model_folder)
    image_ids, image_problems = resolve_names(image_ids, {r.image_id for r in stored.rows}, "image", key)
    subject_ids, subject_problems = resolve_names(subject_ids, {r.subject_id for r in stored.rows}, "subject", key)
    syndromes = {r.syndrome_id for r in stored.rows}
    problems = image_problems + subject_problems + [f"syndrome {name!r} is not in the gallery"
                                                    for name in syndrome_ids if name not in syndromes]
    if problems:
        raise RefusedRows(problems)
    keep = [r for r in stored.rows if r.image_id not in set(image_ids) and r.subject_id not in set(subject_ids)
            and r.syndrome_id not in set(syndrome_ids)]
    index = _commit(model, keep, stored.labels, stored.skipped, stored.sources, approximate_from=approximate_from)
    return BuildReport(folder=Path(model_folder), removed=len(stored.rows) - len(keep), rows=len(keep),
                       syndromes=len({r.syndrome_id for r in keep}), index=index)


def gallery_summary(model: LoadedModel) -> list[dict[str, Any]]:
    """Per syndrome: id, name, OMIM, genes, images, subjects (what ``gallery list`` and the admin page show)."""
    gallery = model.gallery
    if gallery is None:
        return []
    names = {label.id: label for label in model.syndromes}
    out = []
    for sid in sorted(set(gallery.labels.tolist()), key=lambda s: names[s].name.lower()):
        members = gallery.labels == sid
        subjects = gallery.subject_ids[members] if gallery.subject_ids is not None else gallery.image_ids[members]
        label = names[sid]
        out.append({"syndrome_id": sid, "name": label.name, "omim": label.omim,
                    "genes": [g.name for g in label.genes], "in_head": model.has_head and
                    any(x.id == sid for x in model.labels),
                    "images": int(members.sum()), "subjects": len(set(subjects.tolist()))})
    return out
