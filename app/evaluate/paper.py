"""The scorecard as a paper table: CSV, a LaTeX table with intervals, and a methods paragraph.

Everything is generated from the stored scorecard (its spec, options, versions and numbers), so the table
and the text of a paper can be regenerated from ``scorecard.json`` alone and never drift from it. Each row
has its reference lines: the area share and the cross-fitted centre prior for localisation, 0 for the
faithfulness gaps and correlation, 0.5 for ROC-AUC, the flat map and the mask for complexity, and the
sanity verdict as the margin over the between-faces similarity.
"""

from __future__ import annotations

import csv
import io
from typing import Any

__all__ = ["COLUMNS", "methods_paragraph", "scorecard_csv", "scorecard_latex", "table_rows"]

#: (column id, header, where in a method's scores, digits)
COLUMNS: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    ("pointing", "Pointing", ("localisation", "pointing"), 2),
    ("mass", "Mass acc.", ("localisation", "mass"), 3),
    ("rank", "Rank acc.", ("localisation", "rank"), 3),
    ("top_k", "Top-k", ("localisation", "top_k"), 3),
    ("auc", "ROC-AUC", ("localisation", "auc"), 3),
    ("deletion_gap", "Del. gap |m|", ("faithfulness", "deletion_gap"), 2),
    ("insertion_gap", "Ins. gap |m|", ("faithfulness", "insertion_gap"), 2),
    ("road_gap", "ROAD gap |m|", ("faithfulness", "road_gap"), 2),
    ("correlation", "Faith. corr.", ("faithfulness", "correlation"), 3),
    ("deletion_gap_signed", "Del. gap signed", ("faithfulness_signed", "deletion_gap"), 2),
    ("sparseness", "Gini", ("complexity", "sparseness"), 3),
    ("complexity", "Entropy", ("complexity", "complexity"), 2),
    ("context", "Context", ("context", "areas", "context"), 2),
)


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def table_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method (and the reference rows first): column → interval dict (mean, low, high) or None."""
    chance, prior = card["chance"], card["chance"]["centre_prior"]
    flat = card.get("complexity_reference", {}).get("flat", {})
    mask = card.get("complexity_reference", {}).get("mask", {})
    rows: list[dict[str, Any]] = [
        {"method": "reference: area share (chance)", "pointing": chance["pointing_chance"],
         "mass": chance["area_share"], "rank": chance["area_share"], "top_k": chance["area_share"],
         "auc": {"mean": 0.5}, "deletion_gap": {"mean": 0.0}, "insertion_gap": {"mean": 0.0},
         "road_gap": {"mean": 0.0}, "correlation": {"mean": 0.0},
         "sparseness": {"mean": flat.get("sparseness", 0.0)}, "complexity": {"mean": flat.get("complexity")},
         "context": {"mean": 1 - card["area_fraction"]["face"]}},
        {"method": "reference: centre prior (fitted)", **{k: prior.get(k) for k in ("pointing", "mass", "rank",
                                                                                     "top_k", "auc")}},
        {"method": "reference: ground-truth mask", "sparseness": mask.get("sparseness"),
         "complexity": mask.get("complexity")},
    ]
    for method in card["methods"]:
        scores = card["scores"][method]
        row: dict[str, Any] = {"method": method}
        for column, _, path, _ in COLUMNS:
            row[column] = _get(scores, path)
        verdict = card.get("sanity", {}).get(method)
        if verdict:
            row["sanity"] = "fails" if not verdict["passes"] else "passes"
            row["sanity_margin"] = verdict.get("margin")
        rows.append(row)
    return rows


def _cell(value: Any, digits: int) -> tuple[str, str, str]:
    if not isinstance(value, dict) or value.get("mean") is None:
        return "", "", ""
    low, high = value.get("low"), value.get("high")
    return (f"{value['mean']:.{digits}f}", "" if low is None else f"{low:.{digits}f}",
            "" if high is None else f"{high:.{digits}f}")


def scorecard_csv(card: dict[str, Any]) -> str:
    """Long-ish CSV: one row per method, a mean, low and high column per metric, the sanity verdict and margin."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["method"]
    for column, _, _, _ in COLUMNS:
        header += [column, f"{column}_low", f"{column}_high"]
    header += ["sanity", "sanity_margin", "sanity_margin_low", "sanity_margin_high"]
    writer.writerow(header)
    for row in table_rows(card):
        line = [row["method"]]
        for column, _, _, digits in COLUMNS:
            line += list(_cell(row.get(column), max(digits, 4)))
        line += [row.get("sanity", ""), *_cell(row.get("sanity_margin"), 4)]
        writer.writerow(line)
    return buffer.getvalue()


def _tex(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def scorecard_latex(card: dict[str, Any], columns: tuple[str, ...] = ("pointing", "mass", "top_k", "auc",
                                                                        "deletion_gap", "road_gap", "correlation",
                                                                        "sparseness")) -> str:
    """A booktabs table: mean with its 95 % interval in small type, reference rows first, sanity verdict last."""
    chosen = [c for c in COLUMNS if c[0] in columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "c" * (len(chosen) + 1) + "}", r"\toprule",
             "Method & " + " & ".join(_tex(h) for _, h, _, _ in chosen) + r" & Sanity \\", r"\midrule"]
    rows = table_rows(card)
    for n, row in enumerate(rows):
        cells = []
        for column, _, _, digits in chosen:
            mean, low, high = _cell(row.get(column), digits)
            cells.append(f"{mean}" + (rf" {{\scriptsize[{low}, {high}]}}" if low and low != high else ""))
        sanity = row.get("sanity", "")
        margin = row.get("sanity_margin")
        if sanity and isinstance(margin, dict):
            sanity = f"{sanity} ({margin['mean']:+.2f})"
        lines.append(_tex(row["method"]) + " & " + " & ".join(cells) + f" & {sanity}" + r" \\")
        if n == 2:
            lines.append(r"\midrule")
    n_faces = card["benchmark"]["n_faces"]
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{Explanation methods of {_tex(card.get('model', {}).get('id', 'the model'))} on {n_faces} "
              r"synthetic benchmark faces: means with 95\% bootstrap intervals over faces. Gaps order pixels by "
              r"$|$map$|$. Sanity: the cascade's verdict after the classifier and embedding layers are "
              r"randomised, with the margin of the Spearman similarity over the between-faces similarity.}",
              r"\label{tab:scorecard}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _independent_sentence(sanity: dict[str, Any], options: dict[str, Any]) -> str:
    """Which methods had Adebayo's independent (one stage alone) re-initialisation, and why the others not."""
    done = [m for m, r in sanity.items() if r.get("independent")]
    skipped = [m for m, r in sanity.items() if not r.get("independent")]
    names = ", ".join(m.replace("_", " ") for m in done)
    if not done:
        return "no independent re-initialisation"
    if not skipped:
        return f"independent re-initialisation of each stage alone ({names})"
    limit = options.get("independent_max_passes")
    why = f", whose maps cost more than {limit:g} passes" if options.get("independent", True) and limit else ""
    return (f"independent re-initialisation of each stage alone for {names} (not for "
            f"{', '.join(m.replace('_', ' ') for m in skipped)}{why})")


def methods_paragraph(card: dict[str, Any]) -> str:
    """A methods section paragraph generated from the stored spec, options and versions."""
    spec, options, bench = card.get("spec", {}), card["options"], card["benchmark"]
    versions = card.get("versions", {})
    model = card.get("model", {})
    seeds = bench.get("seeds") or [bench.get("seed")]
    fit = card["chance"]["centre_prior"].get("fit", {})
    sigmas = sorted({v["sigma_px"] for v in fit.values()}) if fit else []
    methods = ", ".join(m.replace("_", " ") for m in card["methods"])
    road = ", ".join(f"{100 * p:g}" for p in options["road_percentages"])
    sanity = card.get("sanity") or {}
    text = (
        f"We evaluated {len(card['methods'])} attribution methods ({methods}) for the model "
        f"{model.get('id', '?')} (version {model.get('version', '?')}) on {bench['n_faces']} synthetic faces "
        f"({bench.get('per_class')} per syndrome and benchmark seed; seeds {', '.join(str(s) for s in seeds)}; "
        f"severity {bench.get('severity')}), generated with ground-truth masks of the changed pixels and passed "
        f"through the application's face detection and alignment. Localisation: pointing game "
        f"(tolerance {options['tolerance_px']} px), relevance mass and rank accuracy, top-{options['top_k']} "
        f"intersection and the ROC-AUC of the map against the mask; the chance level is the mask's area share, "
        f"and the control a centred Gaussian whose width was fitted to maximise relevance mass on one half of the "
        f"faces and scored on the other (cross-fitted; σ = {', '.join(f'{s:g}' for s in sigmas)} px). "
        f"Faithfulness: deletion and insertion curves at {len(options['fractions'])} fractions and ROAD at "
        f"{road} % (noisy linear imputation), with pixels ordered by |map| for every method and, for signed "
        f"methods, additionally by signed value (reported separately); faithfulness correlation over "
        f"{options['correlation_runs']} random subsets of 224 input values. Complexity: Gini sparseness and "
        f"entropy of |map|. Robustness: max- and average-sensitivity and a local Lipschitz estimate under uniform "
        f"noise of ±{options['robustness_noise']} on the [−1, 1] input ({options['robustness_samples']} copies "
        f"on {options['sanity_faces']} faces). ")
    if sanity:
        text += (
            f"Sanity checks on {options['sanity_faces']} faces: cascading re-initialisation of seven stages "
            f"(classifier, embedding layers, four residual stages, stem), "
            f"{_independent_sentence(sanity, options)}, and the random-logit test; "
            f"a stage fails when the 95 % bootstrap interval (expanded for few faces) of the per-face margin of the "
            f"Spearman similarity of |map| over the between-faces similarity lies above 0; the method's verdict is "
            f"read after the classifier and embedding layers are randomised. ")
    text += (
        f"Intervals are 95 % percentile bootstraps over faces (2000 resamples, seed {options['seed']}). "
        f"Software: GestaltLens {versions.get('gestaltlens', '?')}, PyTorch {versions.get('torch', '?')}, "
        f"Captum {versions.get('captum', '?')}, NumPy {versions.get('numpy', '?')}"
        ".")
    if spec:
        text += f" The full specification is stored with the scorecard: {spec}."
    return text + "\n"
