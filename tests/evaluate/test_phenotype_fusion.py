"""The fusion report's pipeline at test size: real synthetic faces through detection, alignment and the demo
model's gallery, simulated annotations against the shipped profiles, the card's fusion, three rankings."""

from __future__ import annotations

import json

import numpy as np

from app.evaluate.phenotype_fusion import annotate, evaluate_rankings, face_table, fit_fusion
from app.nets.fusion import Fusion
from app.nets.phenotype import load_phenotype
from app.nets.registry import load_model
from app.settings import PROJECT_ROOT


def test_small_run_of_the_report() -> None:
    model = load_model(PROJECT_ROOT / "models", "demo")
    labels = [label.id for label in model.labels]
    table = face_table(model, seed=777, per_class=2, classes=["syn_a", "syn_c", "syn_g"])
    assert len(table.truth) == 6 and table.face.shape == (6, len(labels))
    phenotype = load_phenotype(model.folder)
    # every true feature entered, no noise: the phenotype alone must find each syndrome
    complete = annotate(table, phenotype, labels, seed=1, missing_rate=0.0, noise_mean=0.0)
    assert all({t.id for t in phenotype.profiles[labels[k]] if t.region} <= set(terms)
               for k, terms in zip(complete.truth, complete.terms, strict=True))
    card = json.loads((model.folder / "model.json").read_text())
    fusion = Fusion.from_json(card["phenotype"]["fusion"])
    results = evaluate_rankings(complete, fusion, resamples=200)
    assert results["n_cases"] == 6
    assert results["rankings"]["phenotype"]["top1"]["value"] == 1.0
    assert results["rankings"]["combined"]["top1"]["value"] == 1.0
    for name in ("face", "phenotype", "combined"):
        r = results["rankings"][name]["top1"]
        assert r["interval95"][0] <= r["value"] <= r["interval95"][1]
    # the fitted weights favour both sources (positive) on noisy annotations of the same faces
    noisy = annotate(table, phenotype, labels, seed=2, missing_rate=0.5, noise_mean=1.0)
    refit = fit_fusion(noisy, {"test": True})
    assert np.isfinite([refit.face_weight, refit.phenotype_weight]).all()
    assert refit.fitted_on["n_cases"] == 6


def test_the_committed_report_is_what_its_command_makes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``reports/phenotype_fusion`` (and the README's numbers from it) comes out of its stated command again: the same
    cases, annotations, fusion and bootstrap give the same results.json. The face table is the command's own cache
    (faces.npz, keyed by model version, seed and size), so this checks everything after the faces in seconds; the
    faces themselves are deterministic per (seed, class, index) and face_table is exercised above."""
    import shutil

    import numpy as np
    from typer.testing import CliRunner

    from app.cli import cli

    report = PROJECT_ROOT / "reports" / "phenotype_fusion"
    committed = json.loads((report / "results.json").read_text())
    model = load_model(PROJECT_ROOT / "models", "demo")
    cases = committed["cases"]
    key = str(np.load(report / "faces.npz")["key"])
    assert key == f"{model.version}|{cases['face_seed']}|{cases['per_class']}", (
        f"the report was made with {key}, the demo model is {model.version}: run `{committed['command']}` again")
    assert committed["command"] == "gestaltlens phenotype report --model demo --per-class 30"
    shutil.copy(report / "faces.npz", tmp_path / "faces.npz")
    ran = CliRunner().invoke(cli, ["phenotype", "report", "--model", "demo", "--per-class", str(cases["per_class"]),
                                   "--seed", str(cases["face_seed"]), "--out", str(tmp_path)])
    assert ran.exit_code == 0, ran.output
    again = json.loads((tmp_path / "results.json").read_text())
    assert {k: v for k, v in again.items() if k != "command"} == {k: v for k, v in committed.items() if k != "command"}
    assert (tmp_path / "cases.json").read_text() == (report / "cases.json").read_text()
    readme = (PROJECT_ROOT / "README.md").read_text()  # the README quotes these numbers
    for name, row in (("face only", "face"), ("phenotype only", "phenotype"), ("**combined**", "combined")):
        r = committed["rankings"][row]
        top1 = f"**{r['top1']['value']:.3f}**" if row == "combined" else f"{r['top1']['value']:.3f}"
        assert f"| {name} | {top1} | {r['top1']['interval95'][0]:.3f}–{r['top1']['interval95'][1]:.3f} |" in readme
