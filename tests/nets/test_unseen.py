"""The unseen-syndrome experiment, as a small run through its command line: a syndrome left out of training
ranks from its confirmed cases alone, and the report's files and numbers are consistent with each other."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from app.nets import unseen
from app.nets.unseen import newcombe, wilson


def test_the_intervals_match_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80 → 0.0524 to 0.3339.
    low, high = newcombe(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    low, high = wilson(81, 263)  # Wilson score interval, 95%: 0.2553 to 0.3662
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)


def test_a_small_unseen_syndrome_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    argv = [str(out), "--left-out", "syn_d", "--per-class", "8", "--epochs", "2", "--new-faces", "4",
            "--seen-faces", "2", "--draws", "2", "--seed", "3", "--workers", "1", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", ["unseen", *argv])
    unseen.main()

    s = json.loads((out / "unseen.json").read_text())
    assert s["left_out"] == "syn_d" and "syn_d" not in s["seen_syndromes"] and len(s["seen_syndromes"]) == 8
    assert s["syndromes_ranked"] == 9 and s["chance"]["top1"] == pytest.approx(1 / 9)
    assert s["confirmed_cases"] == 5 and s["new_faces_seen"] >= 12
    for group in ("unseen", "seen"):
        for k in ("k1", "k3", "k5"):
            r = s["results"][group][k]
            assert r["n"] == len(r["ranks"]) >= 3
            assert all(rank is not None and 1 <= rank <= 9 for rank in r["ranks"])  # always ranked, never lost
            for top in (1, 5, 10):
                assert r[f"top{top}_hits"] == sum(rank <= top for rank in r["ranks"])
                low, high = r[f"top{top}_ci95"]
                assert 0.0 <= low <= r[f"top{top}"] <= high <= 1.0
            assert r["top1"] <= r["top5"] <= r["top10"] == 1.0  # 9 syndromes: top-10 holds them all
            assert r["mean_rank_ci95"][0] <= r["mean_rank"] <= r["mean_rank_ci95"][1]
            control = s["results"]["size_matched"][k][group]
            assert control["n"] == r["n"] and control["draws"] == 2 and control["top10"] == 1.0
            for key in ("top1", "top5", "top10", "mean_rank"):
                assert control[f"{key}_ci95"][0] <= control[key] <= control[f"{key}_ci95"][1]
            diff = s["results"]["unseen_minus_seen_top1"][k]
            unseen_top1, seen_top1 = s["results"]["unseen"][k]["top1"], s["results"]["seen"][k]["top1"]
            assert diff["difference"] == pytest.approx(unseen_top1 - seen_top1)
            assert diff["ci95"][0] <= diff["difference"] <= diff["ci95"][1]
    # The seen faces are the same for every k: only the confirmed cases of syn_d change between the runs.
    assert s["results"]["seen"]["k1"]["n"] == s["results"]["seen"]["k5"]["n"]

    report = (out / "unseen.md").read_text()
    assert f"python -m app.nets.unseen {' '.join(argv)}" in report  # the exact command that made it
    assert s["machine"]["cpu"] in report and f"Wall time {s['seconds']} s" in report
    assert "### Size-matched control" in report and "| unseen syndrome | 5 |" in report
    assert "| seen syndromes | 1 |" in report and "| chance |" in report
    assert (out / "unseen.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (out / "unseen.svg").read_bytes()[:1000]
    assert all(path.stat().st_size < 1_000_000 for path in out.iterdir())
    assert not (out / "work").exists()
