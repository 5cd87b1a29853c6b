"""The unseen-syndrome experiment, as a small run: a syndrome left out of training ranks from its confirmed
cases alone, and the report's files and numbers are consistent."""

from __future__ import annotations

import json
from pathlib import Path

from app.nets.unseen import run


def test_a_small_unseen_syndrome_run(tmp_path: Path) -> None:
    summary = run(tmp_path / "out", left_out="syn_d", per_class=8, epochs=2, new_faces=4, seed=3, workers=1)
    assert "syn_d" not in summary["seen_syndromes"] and len(summary["seen_syndromes"]) == 8
    for k in ("k1", "k3", "k5"):
        unseen = summary["results"]["unseen"][k]
        assert unseen["n"] >= 3 and unseen["top10"] == 1.0  # 9 syndromes: it is always ranked, from the cases alone
        assert 0.0 <= unseen["top1_ci95"][0] <= unseen["top1"] <= unseen["top1_ci95"][1] <= 1.0
    saved = json.loads((tmp_path / "out" / "unseen.json").read_text())
    assert saved["results"] == json.loads(json.dumps(summary["results"]))
    assert (tmp_path / "out" / "unseen.png").read_bytes().startswith(b"\x89PNG")
    assert "| unseen syndrome | 5 |" in (tmp_path / "out" / "unseen.md").read_text()
    assert not (tmp_path / "out" / "work").exists()
