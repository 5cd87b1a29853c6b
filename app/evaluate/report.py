"""Figures and Markdown for scorecards and the imbalance experiment (matplotlib, Agg, PNG bytes or files).

Every plot draws its reference line beside the numbers (area share and centre prior for localisation, the
between-faces similarity for sanity checks, each area's share of the crop for context), as DESIGN.md asks:
a number is never read alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["scorecard_figures", "write_imbalance_report"]


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def localisation_figure(card: dict[str, Any]) -> bytes:
    methods = card["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, key, title in zip(axes, ("pointing", "mass", "rank"),
                              ("pointing game", "relevance mass accuracy", "relevance rank accuracy"), strict=True):
        means = [card["scores"][m]["localisation"][key]["mean"] for m in methods]
        errors = [[means[i] - card["scores"][m]["localisation"][key]["low"] for i, m in enumerate(methods)],
                  [card["scores"][m]["localisation"][key]["high"] - means[i] for i, m in enumerate(methods)]]
        ax.barh(methods, means, xerr=errors, color="#4c72b0")
        chance = card["chance"]["pointing_chance" if key == "pointing" else "area_share"]["mean"]
        ax.axvline(chance, color="black", linestyle="--", label="area share (chance)")
        ax.axvline(card["chance"]["centre_prior"][key]["mean"], color="#c44e52", linestyle=":",
                   label="centre prior (σ fitted on held-out faces)")
        ax.set_title(title)
        ax.set_xlim(0, 1)
    axes[0].invert_yaxis()
    axes[-1].legend(loc="lower right", fontsize=8)
    return _png(fig)


def curves_figure(card: dict[str, Any], kind: str = "deletion", signed: bool = False) -> bytes:
    """Mean curves per method; ``signed``: the signed-order curves of the signed methods (labelled so)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    fractions = card["options"]["fractions"] if kind != "road" else [0.0, *card["options"]["road_percentages"]]
    key = "curves_signed" if signed else "curves"
    order_label = "signed order (positive first)" if signed else "|map| order"
    for ax, order in zip(axes, ("morf", "lerf"), strict=True):
        for method in card["methods"]:
            curve = (card["scores"][method].get(key) or {}).get(f"{kind}_{order}")
            if curve:
                ax.plot(fractions, curve, label=method)
        ax.set_title(f"{kind}, {'most' if order == 'morf' else 'least'} relevant first, {order_label}", fontsize=9)
        ax.set_xlabel("fraction of pixels")
    axes[0].set_ylabel("target logit")
    axes[-1].legend(fontsize=7)
    return _png(fig)


def sanity_figure(card: dict[str, Any]) -> bytes:
    """The sanity plot (:func:`sanity_plot`) as PNG."""
    return _png(sanity_plot(card))


def sanity_plot(card: dict[str, Any]) -> Any:
    """Left: the cascade per method with its reference band (between-faces similarity, 95 % interval) and the
    reference's mean as a dotted line. Right: the verdicts, the margin over that reference per stage with its
    interval, and the reference itself as the dashed line at 0; above it = fails. Why the reference is drawn:
    the verdict is a comparison with it, not a fixed threshold, so a plot without it cannot be read."""
    methods = list(card["sanity"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    for method, result in card["sanity"].items():
        stages = result["stages"]
        line = ax.plot(["original", *stages], [1.0, *[result["per_stage"][s]["spearman"]["mean"] for s in stages]],
                       marker="o", label=method)
        ref = result["reference"]["spearman"]
        ax.axhspan(ref["low"], ref["high"], color=line[0].get_color(), alpha=0.12)
        ax.axhline(ref["mean"], color=line[0].get_color(), linestyle=":", linewidth=0.9)
    ax.set_ylabel("Spearman of |map| vs original")
    ax.set_title("cascading randomisation (dotted + band: between-faces similarity)", fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=7)
    tests = [("cascade", "embedding", "cascade: classifier + embedding"),
             ("random_logit", None, "random logit")]
    for k, (test, stage, label) in enumerate(tests):
        for i, method in enumerate(methods):
            result = card["sanity"][method]
            verdict = result.get(test) if stage is None else (result.get(test) or {}).get(stage)
            if not verdict:
                continue
            m = verdict["margin"]
            y = i + (k - 0.5) * 0.3
            bx.errorbar(m["mean"], y, xerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]], fmt="o" if k == 0
                        else "s", color="#c44e52" if verdict["fails"] else "#4c72b0", capsize=2,
                        label=label if i == 0 else None)
    bx.axvline(0.0, color="black", linestyle="--", linewidth=1, label="reference (another face's map)")
    bx.set_yticks(range(len(methods)), methods, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("similarity to the original − between-faces similarity")
    bx.set_title("verdicts: interval above 0 = fails (red)", fontsize=9)
    bx.legend(fontsize=7, loc="lower right")
    return fig


def context_figure(card: dict[str, Any]) -> bytes:
    methods = card["methods"]
    areas = ["face", "ears", "hair", "background", "neck"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(methods) + 1.6))
    left = [0.0] * (len(methods) + 1)
    labels = ["(flat map)", *methods]
    for area in areas:
        values = [card["area_fraction"][area], *[card["scores"][m]["context"]["areas"][area]["mean"] for m in methods]]
        ax.barh(labels, values, left=left, label=area)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("share of |map| by area (first row: each area's share of the crop)")
    ax.legend(ncol=5, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, -0.45))
    return _png(fig)


def scorecard_figures(card: dict[str, Any]) -> dict[str, bytes]:
    """File name → PNG bytes of every scorecard plot."""
    figures = {"localisation.png": localisation_figure(card), "deletion.png": curves_figure(card, "deletion"),
               "insertion.png": curves_figure(card, "insertion"), "context.png": context_figure(card)}
    if any(card["scores"][m].get("curves_signed") for m in card["methods"]):
        figures["deletion_signed.png"] = curves_figure(card, "deletion", signed=True)
    if card["options"]["road_percentages"]:
        figures["road.png"] = curves_figure(card, "road")
    if card["sanity"]:
        figures["sanity.png"] = sanity_figure(card)
    return figures


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(group: dict[str, Any], key: str) -> str:
    interval = (group.get("ci") or {}).get(key)
    return f" [{interval['low']:.3f}, {interval['high']:.3f}]" if interval else ""


def write_imbalance_report(experiment: dict[str, Any], out: Path) -> None:
    """report.md and PNG plots for :func:`app.evaluate.imbalance.run_experiment`'s result."""
    conditions = experiment["conditions"]
    rare = experiment["rare_class"]
    methods = experiment["methods"]
    names = list(conditions)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.4), sharey=True)
    axes = axes if len(methods) > 1 else [axes]
    for ax, method in zip(axes, methods, strict=True):
        rare_mass = [conditions[c]["summary"][method]["rare"]["mass"] for c in names]
        other_mass = [conditions[c]["summary"][method]["others"]["mass"] for c in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], rare_mass, width=0.4, label=rare)
        ax.bar([x + 0.2 for x in xs], other_mass, width=0.4, label="other syndromes")
        ax.axhline(conditions[names[0]]["chance"]["area_share"]["mean"], color="black", linestyle="--",
                   label="area share")
        ax.set_xticks(list(xs), names, rotation=30, fontsize=7)
        ax.set_title(method, fontsize=9)
    axes[0].set_ylabel("relevance mass accuracy")
    axes[-1].legend(fontsize=7)
    (out / "mass_accuracy.png").write_bytes(_png(fig))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for method in methods:
        ax.plot(names, [conditions[c]["summary"][method]["rare"]["context"] for c in names], marker="o", label=method)
    ax.axhline(1 - conditions[names[0]]["scorecard"]["area_fraction"]["face"], color="black", linestyle="--",
               label="flat map")
    ax.set_ylabel(f"context share of |map| ({rare})")
    ax.legend(fontsize=7)
    (out / "context_share.png").write_bytes(_png(fig))

    lines = [
        "# Class imbalance and a shortcut cue: do explanations localise worse?", "",
        f"Question: {experiment['question']}", "",
        *([] if experiment.get("complete", True) else
          ["**Incomplete run:** only the conditions below were measured before the run was stopped.", ""]),
        f"Rare class `{rare}`; {experiment['epochs']} epochs per model, {experiment.get('seeds', 1)} "
        f"training seed(s) per condition (intervals: 95 % bootstrap over faces × seeds); "
        f"methods {', '.join(methods)}; evaluated on "
        f"{experiment['n_eval_faces']} test faces (every `{rare}` test face and a few of each other syndrome); "
        f"ROAD at {', '.join(str(p) for p in experiment['road_percentages'])}; torch {experiment['torch']}, "
        f"{experiment['threads']} threads. Every number below is in `report.json`.", "",
        f"Made by: `{experiment.get('command', '')}` on the data set `{experiment['data']}`.", "",
        "## Accuracy", "",
        f"| condition | training images ({rare}) | top-1 (gallery) | top-1 (softmax) | {rare} top-1 | "
        "cue faces in eval | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in names:
        r = conditions[c]
        lines.append(f"| {c} | {sum(r['train_counts'].values())} ({r['train_counts'].get(rare)}) | {_f(r['top1'])} | "
                     f"{_f(r['softmax_top1'])} | {_f(r['per_class_top1'][rare])} | {r['cue_faces']} | "
                     f"{r['train_seconds']} |")
    area = conditions[names[0]]["chance"]["area_share"]["mean"]
    prior = conditions[names[0]]["chance"]["centre_prior"]["mass"]["mean"]
    lines += ["", "## Localisation and context per method", "",
              f"Relevance mass accuracy (chance: area share {_f(area)}, centre prior {_f(prior)}), pointing game, "
              f"deletion gap (LeRF − MoRF AUC, logit units; > 0 = faithful) and context share of |map| "
              f"(flat map: {_f(1 - conditions[names[0]]['scorecard']['area_fraction']['face'])}).", "",
              f"| condition | method | mass {rare} | mass others | pointing {rare} | pointing others | deletion gap | "
              f"context {rare} | background+hair {rare} |", "|---|---|---|---|---|---|---|---|---|"]
    for c in names:
        for m in methods:
            s = conditions[c]["summary"][m]
            bg = s["rare"].get("hair_background")  # the rare class's faces only (older reports: absent)
            lines.append(f"| {c} | {m} | {_f(s['rare']['mass'])}{_ci(s['rare'], 'mass')} | {_f(s['others']['mass'])} | "
                         f"{_f(s['rare']['pointing'], 2)} | {_f(s['others']['pointing'], 2)} | "
                         f"{_f(s['deletion_gap'], 2)} | "
                         f"{_f(s['rare']['context'])} | {_f(bg)} |")
    lines += ["", "## Occlusion of the context (everything outside the face replaced by its mean colour)", "",
              "| condition | top-1 on photo | top-1 face only | mean target logit change |", "|---|---|---|---|"]
    for c in names:
        o = conditions[c]["context_occlusion"]
        lines.append(f"| {c} | {_f(o['top1'])} | {_f(o['top1_face_only'])} | {_f(o['logit_change'], 2)} |")
    lines += ["", "![mass accuracy](mass_accuracy.png)", "", "![context share](context_share.png)", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
