"""A gallery's saved search index (issue: the first ranking after a start trained the IVF for minutes):
written by the gallery commands beside the gallery, loaded with the model, never used for other bytes.

The approximate path is forced with a lowered threshold (1,000 rows) on a 3,000-row seeded gallery, so the
faiss index is real (128 cells) and each build takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from app.nets import iresnet18, load_model, read_model_folder
from app.nets.gallery import write_gallery
from app.nets.gallery_build import gallery_summary, provenance_of, remove_rows
from app.nets.gallery_index import gallery_search, index_rows
from app.nets.predict import _distances
from app.nets.search import NearestIndex, read_index_header
from tests.nets.helpers import LABEL_IDS, randomise_, write_folder

THRESHOLD = 1000
ROWS = 3000


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _embeddings(n: int, seed: int) -> np.ndarray:
    """Rows around 200 seeded centres, so nearest neighbours are not a tie of noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, 512)).astype(np.float32)
    return _unit(centres[rng.integers(0, 200, n)] + 0.8 * rng.standard_normal((n, 512), dtype=np.float32))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with a hand-made 3,000-row gallery.npz (no index yet: made without the commands)."""
    root = tmp_path_factory.mktemp("models")
    network = randomise_(iresnet18(num_classes=5, width=0.25), seed=5)
    folder = write_folder(root / "big", network, gallery="gallery.npz")
    labels = [LABEL_IDS[i % 5] for i in range(ROWS)]
    write_gallery(folder / "gallery.npz", _embeddings(ROWS, seed=1), labels, [f"g{i}" for i in range(ROWS)],
                  [f"S{i // 2}" for i in range(ROWS)])
    return folder


@pytest.fixture
def folder(tmp_path: Path, template: Path) -> Path:
    target = tmp_path / "models" / template.name
    shutil.copytree(template, target)
    return target


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _queries(gallery_unit: np.ndarray, seed: int) -> np.ndarray:
    """Noisy copies of stored rows and fresh draws: what a ranking asks."""
    rng = np.random.default_rng(seed)
    near = gallery_unit[rng.integers(0, len(gallery_unit), 12)] + 0.05 * rng.standard_normal((12, 512))
    return _unit(np.concatenate([near, _embeddings(12, seed=seed + 100)]).astype(np.float32))


def _index_file(folder: Path) -> Path:
    [path] = folder.glob("*.ivf.faiss")
    return path


def test_a_saved_index_loads_and_searches_as_a_fresh_one(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = remove_rows(folder, image_ids=["g0"], approximate_from=THRESHOLD)  # rewrites the gallery
    model = read_model_folder(folder)
    saved = folder / str(report.index)
    assert report.index == Path(model.card.gallery).stem + ".ivf.faiss" and saved.is_file()
    header = read_index_header(saved)
    assert header["gallery_sha256"] == hashlib.sha256((folder / model.card.gallery).read_bytes()).hexdigest()
    assert (header["rows"], header["dim"], header["cells"]) == (ROWS - 1, 512, 128)
    assert provenance_of(model)["search_index"]["file"] == saved.name  # the provenance names it

    # the model loads it (with the default 150k threshold, too: a saved index for these bytes is used)
    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        loaded = load_model(folder.parent, folder.name)
    assert f"search index {saved.name} loaded" in caplog.text and "Building" not in caplog.text
    search = gallery_search(loaded.gallery)
    assert search.index.approximate and len(search.index) == ROWS - 1

    fresh = NearestIndex(512, approximate_from=THRESHOLD)
    fresh.add(index_rows(loaded.gallery))
    assert fresh.approximate
    queries = _queries(loaded.gallery.unit, seed=3)
    got, want = search.index.search(queries, 10), fresh.search(queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])

    # and ranks as a fresh index on another copy of the same gallery does (distances, rows, order)
    other = read_model_folder(folder).gallery
    assert gallery_search(other, approximate_from=THRESHOLD).index is not search.index
    for query in queries:
        for top_k in (1, 5):
            best, row = _distances(loaded.gallery, 5, query[None, :], top_k)
            best_fresh, row_fresh = _distances(other, 5, query[None, :], top_k)
            np.testing.assert_array_equal(best, best_fresh)
            np.testing.assert_array_equal(row, row_fresh)


def test_an_index_of_other_bytes_is_never_used(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A gallery edited after its index was written: the index is stale, rebuilt (and saved) at load, and the
    log says so; a damaged index file is rebuilt the same way; a stale index below the threshold is ignored."""
    remove_rows(folder, image_ids=["g0"], approximate_from=THRESHOLD)
    gallery_file = folder / read_model_folder(folder).card.gallery
    index_path = _index_file(folder)
    old_header = read_index_header(index_path)
    with np.load(gallery_file) as stored:
        columns = {key: stored[key] for key in stored.files}
    changed = columns["embeddings"].copy()
    changed[:500] = _embeddings(500, seed=77)  # new faces in place of old ones, same rows and names
    write_gallery(gallery_file, changed, columns["labels"], columns["image_ids"], columns["subject_ids"])

    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        model = load_model(folder.parent, folder.name, approximate_from=THRESHOLD)
    assert f"search index {index_path.name} is stale" in caplog.text
    assert "search index saved as" in caplog.text
    header = read_index_header(index_path)
    digest = hashlib.sha256(gallery_file.read_bytes()).hexdigest()
    assert header["gallery_sha256"] == digest != old_header["gallery_sha256"]
    search = gallery_search(model.gallery)
    assert search.index.approximate
    # the rebuilt index knows the new faces: each finds itself first
    _, found = search.index.search(model.gallery.unit[:20], 1)
    assert found[:, 0].tolist() == list(range(20))
    fresh = NearestIndex(512, approximate_from=THRESHOLD)
    fresh.add(index_rows(model.gallery))
    queries = _queries(model.gallery.unit, seed=4)
    np.testing.assert_array_equal(search.index.search(queries, 10)[1], fresh.search(queries, 10)[1])

    # the saved one is loaded at the next start
    caplog.clear()
    from app.nets.registry import clear_cache

    clear_cache()
    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        load_model(folder.parent, folder.name, approximate_from=THRESHOLD)
    assert f"search index {index_path.name} loaded" in caplog.text

    # a file cut short: rebuilt, never half-read
    index_path.write_bytes(index_path.read_bytes()[:5000])
    caplog.clear()
    clear_cache()
    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        model = load_model(folder.parent, folder.name, approximate_from=THRESHOLD)
    assert "cannot be read" in caplog.text and gallery_search(model.gallery).index.approximate
    assert read_index_header(index_path)["gallery_sha256"] == digest
    assert NearestIndex.load(index_path)[0].approximate

    # stale again, and the gallery below the (default) threshold: the index is ignored, the scan is exact
    write_gallery(gallery_file, columns["embeddings"], columns["labels"], columns["image_ids"],
                  columns["subject_ids"])
    caplog.clear()
    clear_cache()
    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        model = load_model(folder.parent, folder.name)
    assert "is not used" in caplog.text and not gallery_search(model.gallery).index.approximate


def test_an_index_that_cannot_be_saved_still_serves(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A hand-made gallery.npz without an index: built at load and saved; where it cannot be saved (here a
    folder in the way, as a read-only mount would refuse it) the rebuilt index serves and the log says so."""
    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        model = load_model(folder.parent, folder.name, approximate_from=THRESHOLD)
    assert "no saved search index" in caplog.text and "saved as gallery.ivf.faiss" in caplog.text
    assert gallery_search(model.gallery).index.approximate
    assert read_index_header(folder / "gallery.ivf.faiss")["rows"] == ROWS

    from app.nets.registry import clear_cache

    (folder / "gallery.ivf.faiss").unlink()
    (folder / "gallery.ivf.faiss").mkdir()
    clear_cache()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="app.nets.gallery_index"):
        model = load_model(folder.parent, folder.name, approximate_from=THRESHOLD)
    assert "could not be saved" in caplog.text and gallery_search(model.gallery).index.approximate
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_remove_rebuilds_the_index_or_drops_it(folder: Path) -> None:
    first = remove_rows(folder, image_ids=["g1"], approximate_from=THRESHOLD)
    first_index = folder / str(first.index)
    second = remove_rows(folder, subject_ids=["S1", "S2"], approximate_from=THRESHOLD)  # rows g2..g5
    assert second.removed == 4 and second.index is not None and second.index != first.index
    assert not first_index.exists()  # the old gallery's index went with it
    model = read_model_folder(folder)
    assert [p.name for p in folder.glob("*.ivf.faiss")] == [second.index]
    header = read_index_header(folder / second.index)
    assert header["rows"] == ROWS - 5 == len(model.gallery)
    assert header["gallery_sha256"] == hashlib.sha256((folder / model.card.gallery).read_bytes()).hexdigest()

    # one syndrome left (600 rows less g4): below the threshold, so no index, and the provenance says none
    third = remove_rows(folder, syndrome_ids=list(LABEL_IDS[:4]), approximate_from=THRESHOLD)
    assert third.index is None and third.rows == 599 == len(read_model_folder(folder).gallery)
    assert not list(folder.glob("*.ivf.faiss"))
    model = read_model_folder(folder)
    assert provenance_of(model)["search_index"] is None
    assert [row["syndrome_id"] for row in gallery_summary(model)] == [LABEL_IDS[4]]
    remove_rows(folder, syndrome_ids=[LABEL_IDS[4]], approximate_from=THRESHOLD)  # an empty gallery
    assert read_model_folder(folder).gallery is None and not list(folder.glob("gallery*"))


def test_a_failed_index_build_leaves_the_folder_as_it_was(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remove_rows(folder, image_ids=["g0"], approximate_from=THRESHOLD)
    before = _files(folder)
    card_before = json.loads((folder / "model.json").read_text())

    def disk_full(index: object, writer: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", disk_full)  # faiss's, after the header is on disk
    with pytest.raises(OSError, match="No space"):
        remove_rows(folder, image_ids=["g1"], approximate_from=THRESHOLD)
    assert _files(folder) == before  # no new gallery, no index, no temporary file, model.json as it was
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert json.loads((folder / "model.json").read_text()) == card_before
