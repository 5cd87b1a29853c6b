"""The unseen-syndrome experiment's report: Markdown and plots (PNG and SVG) from its JSON summary.

Every number written here is read from the summary that :func:`app.nets.unseen.run` saves as ``unseen.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

K_CONFIRMED = (1, 3, 5)
GROUPS = (("unseen", "unseen syndrome"), ("seen", "seen syndromes"))


def _pct(value: float) -> str:
    return f"{value:.2f}"


def _with_ci(result: dict[str, Any], top: int | str) -> str:
    key = f"top{top}" if isinstance(top, int) else top
    low, high = result[f"{key}_ci95"]
    return f"{_pct(result[key])} ({_pct(low)}–{_pct(high)})"


def _side(interval: list[float], reference: float) -> str:
    low, high = interval
    return "above" if low > reference else "below" if high < reference else "not distinguishable from"


def _rank_side(r: dict[str, Any], chance: float) -> str:
    low, high = r["mean_rank_ci95"]
    verdict = "better than" if high < chance else "worse than" if low > chance else "not distinguishable from"
    return f"mean rank {_with_ci(r, 'mean_rank')} is {verdict} chance ({chance:.2f})"


def _findings(s: dict[str, Any]) -> list[str]:
    """Plain comparisons of each interval with chance and with the seen syndromes (no judgement added)."""
    chance = s["chance"]
    lines = []
    for k in K_CONFIRMED:
        unseen, seen = s["results"]["unseen"][f"k{k}"], s["results"]["seen"][f"k{k}"]
        diff = s["results"]["unseen_minus_seen_top1"][f"k{k}"]
        d_low, d_high = diff["ci95"]
        versus_seen = ("below the seen syndromes'" if d_high < 0 else "above the seen syndromes'" if d_low > 0
                       else "not distinguishable from the seen syndromes'")
        control = s["results"]["size_matched"][f"k{k}"]
        c_unseen, c_seen = control["unseen"], control["seen"]
        lines.append(
            f"- **{k} confirmed case{'s' if k > 1 else ''}, as served**: unseen top-1 {_with_ci(unseen, 1)} is "
            f"{_side(unseen['top1_ci95'], chance['top1'])} chance ({chance['top1']:.3f}) and {versus_seen} "
            f"{_pct(seen['top1'])} (difference {diff['difference']:+.2f}, 95% CI {d_low:+.2f} to {d_high:+.2f}); "
            f"unseen top-5 {_with_ci(unseen, 5)} is {_side(unseen['top5_ci95'], chance['top5'])} chance "
            f"({chance['top5']:.3f}) against seen {_with_ci(seen, 5)}; unseen "
            f"{_rank_side(unseen, chance['mean_rank'])}. **Size-matched** ({k} face{'s' if k > 1 else ''} per "
            f"syndrome): unseen top-1 {_with_ci(c_unseen, 1)} is {_side(c_unseen['top1_ci95'], chance['top1'])} "
            f"chance, top-5 {_with_ci(c_unseen, 5)} is {_side(c_unseen['top5_ci95'], chance['top5'])} chance, "
            f"{_rank_side(c_unseen, chance['mean_rank'])}; seen top-1 {_with_ci(c_seen, 1)}, top-5 "
            f"{_with_ci(c_seen, 5)}.")
    return lines


def write_markdown(out: Path, s: dict[str, Any]) -> None:
    m = s["machine"]
    phases = s["phases_s"]
    model = s["model_metrics"]
    lines = [
        f"# Unseen-syndrome experiment: {s['left_out']} ({s['left_out_name']}) left out of training", "",
        "Made by (from the repository root, with the repository on `PYTHONPATH`):", "",
        f"    {s['command']}", "",
        f"Every option spelt out: `{s['every_option']}`. Code at commit `{m['git_commit']}`"
        f"{' (app/ had uncommitted changes)' if m['app_tree_dirty'] else ''}.", "",
        f"Machine: {m['cpu']} ({m['cpu_id']}), {m['cpus']} CPUs available to the run, load average "
        f"{' / '.join(map(str, m['load_average_start']))} at the start and "
        f"{' / '.join(map(str, m['load_average_end']))} at the end (1/5/15 min; the machine is shared); "
        f"Python {m['python']}, torch {m['torch']}, OMP_NUM_THREADS={m['omp_num_threads']}. "
        f"Wall time {s['seconds']} s: generating the data set {phases['generate_s']} s, training "
        f"{phases['train_s']} s, generating and ranking new patients {phases['rank_s']} s.", "",
        "## Set-up", "",
        f"A demo-size model (iResNet-18 × 0.25) was trained for {s['epochs']} epochs on "
        f"{len(s['seen_syndromes'])} synthetic syndromes ({s['per_class']} generated photos each, "
        f"{s['n_train']} for training and {s['n_test']} held out), seed {s['seed']}. {s['left_out']} is in neither "
        "the head nor the model's gallery. New patients (generator seed "
        f"{s['case_seed']}, never seen in training) were then generated: {s['confirmed_cases']} of {s['left_out']} "
        "play confirmed cases shared for matching (the living gallery holds the first 1, 3 or 5 of them), "
        f"{s['new_faces_unseen']} more of {s['left_out']} and {s['seen_faces_per_syndrome']} of each seen syndrome "
        f"({s['new_faces_seen']} in all) are ranked among all {s['syndromes_ranked']} syndromes by nearest-face "
        "cosine distance, the same call a case's ranking makes. The same faces are ranked for every k. "
        f"On its own held-out photos (no confirmed cases) the model ranks seen syndromes with top-1 "
        f"{_pct(model['top1'])} and top-5 {_pct(model['top5'])} by gallery distance.", "",
        "## Results", "",
        "Share of new faces whose true syndrome is ranked within the top 1, 5 and 10, with Wilson 95% intervals. "
        f"Top-10 is 1 by construction: only {s['syndromes_ranked']} syndromes are ranked.", "",
        "| faces ranked | confirmed cases of " + s["left_out"] + " in the gallery | n | top-1 (95% CI) | "
        "top-5 (95% CI) | top-10 (95% CI) | mean rank (95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    chance = s["chance"]
    chance_row = (f"| chance | – | – | {_pct(chance['top1'])} | {_pct(chance['top5'])} | {_pct(chance['top10'])} | "
                  f"{_pct(chance['mean_rank'])} |")
    for group, name in GROUPS:
        for k in K_CONFIRMED:
            r = s["results"][group][f"k{k}"]
            lines.append(f"| {name} | {k} | {r['n']} | {_with_ci(r, 1)} | {_with_ci(r, 5)} | {_with_ci(r, 10)} | "
                         f"{_with_ci(r, 'mean_rank')} |")
    lines += [chance_row, "",
              "### Size-matched control", "",
              "The same faces ranked when every syndrome is known from k faces only: each seen syndrome's k faces "
              f"drawn at random from the model's gallery ({s['size_matched_draws']} draws, each face's hits "
              "averaged over the draws; 95% intervals by bootstrap over faces), the unseen syndrome's its k "
              "confirmed cases. This shows what the embedding knows about the unseen syndrome without the "
              "advantage that nearest-of-many has over nearest-of-k.", "",
              "| faces ranked | faces per syndrome in the gallery | n | top-1 (95% CI) | top-5 (95% CI) | "
              "top-10 (95% CI) | mean rank (95% CI) |",
              "|---|---|---|---|---|---|---|"]
    for group, name in GROUPS:
        for k in K_CONFIRMED:
            r = s["results"]["size_matched"][f"k{k}"][group]
            lines.append(f"| {name} | {k} | {r['n']} | {_with_ci(r, 1)} | {_with_ci(r, 5)} | {_with_ci(r, 10)} | "
                         f"{_with_ci(r, 'mean_rank')} |")
    lines += [chance_row, "",
              "![top-1 and top-5 by confirmed cases, with chance and the seen syndromes; below, the size-matched "
              "control](unseen.png)", "",
              "(Also as [unseen.svg](unseen.svg); every number is in [unseen.json](unseen.json), with each face's "
              "rank.)", "",
              "## What the intervals say", "",
              "Generated from the numbers: an interval above or below a reference means the whole 95% interval "
              "lies on that side; unseen − seen differences use Newcombe's interval.", "",
              *_findings(s), ""]
    (out / "unseen.md").write_text("\n".join(lines))


def write_plots(out: Path, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "unseen"
    figure, grid = plt.subplots(2, 2, figsize=(8.4, 6.6), dpi=100, sharey=True)
    rows = (("living gallery as served",
             lambda group, k: s["results"][group][f"k{k}"]),
            ("size-matched control (k faces each)",
             lambda group, k: s["results"]["size_matched"][f"k{k}"][group]))
    for panels, (title, pick) in zip(grid, rows, strict=True):
        for axes, top in zip(panels, (1, 5), strict=True):
            for offset, (group, name), style in ((-0.08, GROUPS[0], "o-"), (0.08, GROUPS[1], "s--")):
                values = [pick(group, k) for k in K_CONFIRMED]
                y = [v[f"top{top}"] for v in values]
                err = [[v[f"top{top}"] - v[f"top{top}_ci95"][0] for v in values],
                       [v[f"top{top}_ci95"][1] - v[f"top{top}"] for v in values]]
                axes.errorbar([k + offset for k in K_CONFIRMED], y, yerr=err, fmt=style, capsize=3,
                              label=f"{name} (n={values[0]['n']})")
            chance = s["chance"][f"top{top}"]
            axes.axhline(chance, color="grey", linestyle=":")
            axes.annotate(f"chance {chance:.3f}", (4, chance), xytext=(0, 3), textcoords="offset points",
                          ha="center", fontsize=7, color="dimgrey")
            axes.set_xticks(K_CONFIRMED)
            axes.set_xlim(0.5, 5.5)
            axes.set_xlabel(f"confirmed cases of {s['left_out']} in the gallery" if pick is rows[0][1]
                            else "faces per syndrome in the gallery", fontsize=8)
            axes.set_title(f"top-{top}, {title}", fontsize=9)
            axes.set_ylim(0, 1.05)
        panels[0].set_ylabel("share of new faces")
    panels = grid[0]
    figure.suptitle(f"{s['left_out']} left out of training (95% intervals); top-10 is 1 with "
                    f"{s['syndromes_ranked']} syndromes", fontsize=10)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(out / "unseen.png")
    figure.savefig(out / "unseen.svg", metadata={"Date": None})
    plt.close(figure)
