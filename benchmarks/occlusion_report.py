"""
The occlusion benchmark's report over training seeds: per variant the mean and standard deviation
over seeds, each variant against the first chosen one (IAI by default) as a difference paired by
seed with a 95% t-interval, and the re-identification accounting summed over seeds; written as
occlusion.{md,json,png} with the commit, configs and date it was measured with.
"""
import hashlib
import json
import os
import subprocess
import time
from collections import OrderedDict

import numpy as np

from iai_d2.evaluation.reidentification import GAP_BUCKETS, OUTCOMES, sum_counts
from iai_d2.utils import atomic_write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# variant -> (row key, label) of a second row of its runs, no config of its own: the variant's
# detections with IoU-linked identities (its diagnosis's iou_link labelling).
LINKED_ROWS = OrderedDict([
    ("iai", ("iai_iou_link", "IAI detections + IoU linking (association w/o ID head)")),
    ("m2f_query_match", ("m2f_iou_link", "Mask2Former + IoU linking (the query-matching run's detections)")),
])
# metric key -> table header; "own" metrics score the row's own identities
METRICS = OrderedDict([
    ("AP", "AP"), ("HOTA", "HOTA"), ("AssA", "AssA"), ("IDF1", "IDF1"), ("id_switches", "ID switches"),
    ("reid_kept", "re-ID kept %"), ("link_AP", "IoU-linked AP"), ("oracle_AP", "oracle AP"),
])
PAIRED = ("AP", "HOTA", "AssA", "IDF1", "reid_kept")
BY_LABELLING = ("HOTA", "AssA", "IDF1")  # also reported for the same detections under OTHER_LABELLINGS
OTHER_LABELLINGS = ("iou_link", "oracle")


def _kept_percent(counts):
    n = sum(counts["all"][side][o] for side in counts["all"] for o in OUTCOMES)
    return 100.0 * sum(counts["all"][side]["kept"] for side in counts["all"]) / n if n else float("nan")


def own_labelling(name):
    """The diagnosis labelling that holds variant ``name``'s own identities: the floor's model IDs
    are IoU-linked ones (its diagnosis scores them as iou_link); every other variant's are model."""
    return "iou_link" if name == "floor" else "model"


def row_values(diagnosis, labelling):
    """The METRICS of one run's diagnosis scored with ``labelling`` (model or iou_link)."""
    rows = diagnosis["rows"]
    own = rows[labelling]
    values = {k: float(own[k]) for k in ("AP", "HOTA", "AssA", "IDF1", "id_switches")}
    values["reid_kept"] = _kept_percent(diagnosis["reid"][labelling])
    values["link_AP"], values["oracle_AP"] = float(rows["iou_link"]["AP"]), float(rows["oracle"]["AP"])
    for other in OTHER_LABELLINGS:
        values.update((f"{other}_{m}", float(rows[other][m])) for m in BY_LABELLING)
    return values


def per_seed(variants, chosen, runs):
    """{row key: {"label", "values": {seed: METRICS}, "reid": summed counts}} for the chosen
    variants that have results, plus the LINKED_ROWS (detections with IoU-linked identities) after
    their variants."""
    table = OrderedDict()
    for name in chosen:
        seeds = sorted(seed for seed, n in runs if n == name)
        if not seeds:
            continue
        rows = [(name, variants[name][2], own_labelling(name))]
        if name in LINKED_ROWS:
            rows.append((*LINKED_ROWS[name], "iou_link"))
        for key, label, labelling in rows:
            diags = {seed: runs[(seed, name)]["diagnosis"] for seed in seeds}
            table[key] = dict(
                label=label,
                values=OrderedDict((seed, row_values(d, labelling)) for seed, d in diags.items()),
                reid=sum_counts([d["reid"][labelling] for d in diags.values()]),
            )
    return table


def mean_sd(values):
    """(mean, sample standard deviation; nan for one value) of a list of floats."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def paired_difference(reference, other):
    """``other`` - ``reference`` over the seeds both have ({seed: value}): dict n, mean, sd and the
    95% t-interval (lo, hi; nan with fewer than 2 seeds)."""
    from scipy.stats import t

    seeds = sorted(set(reference) & set(other))
    d = np.array([other[s] - reference[s] for s in seeds], dtype=float)
    if len(d) == 0:
        return dict(n=0, mean=float("nan"), sd=float("nan"), lo=float("nan"), hi=float("nan"))
    mean, sd = mean_sd(d)
    half = float(t.ppf(0.975, len(d) - 1)) * sd / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return dict(n=len(d), mean=mean, sd=sd, lo=mean - half, hi=mean + half)


def summarize(table):
    """Mean +- sd of every METRIC per row, and every row against the reference row (the first:
    the first chosen variant, IAI by default), paired by seed."""
    summary = OrderedDict()
    for key, row in table.items():
        metrics = (*METRICS, *(f"{o}_{m}" for o in OTHER_LABELLINGS for m in BY_LABELLING))
        summary[key] = OrderedDict((m, mean_sd([v[m] for v in row["values"].values()])) for m in metrics)
    paired = OrderedDict()
    if table:
        reference = next(iter(table))
        ref = table[reference]["values"]
        for key, row in table.items():
            if key != reference:
                paired[key] = OrderedDict(
                    (m, paired_difference({s: v[m] for s, v in ref.items()},
                                          {s: v[m] for s, v in row["values"].items()}))
                    for m in PAIRED
                )
    return summary, paired


def provenance(config_files):
    """Commit (with a note when the worktree differs from it) and {config: fingerprint} of the files."""
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", REPO, *cmd], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " + uncommitted changes"
    configs = OrderedDict()
    for path in config_files:
        with open(os.path.join(REPO, path)) as f:
            configs[path] = config_fingerprint(f.read())
    return commit, configs


def config_fingerprint(text):
    """sha1[:10] of a YAML config without its comments and blank lines, so that editing a
    comment does not make a table's config look different from the one its runs used."""
    lines = (line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
             for line in text.splitlines())
    return hashlib.sha1("\n".join(line for line in lines if line).encode()).hexdigest()[:10]


def _cell(mean, sd, digits=1):
    if np.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}")


def _interval(d):
    if np.isnan(d["mean"]):
        return "-"
    return f"{d['mean']:+.1f}" + ("" if np.isnan(d["lo"]) else f" [{d['lo']:+.1f}, {d['hi']:+.1f}]")


def _reid_cell(counts):
    n = sum(counts.values())
    if not n:
        return "-"
    return "/".join(f"{100 * counts[o] / n:.0f}" for o in OUTCOMES) + f" ({n})"


def markdown(report):
    from tabulate import tabulate

    table, summary, paired = report["table"], report["summary"], report["paired"]
    reference = table[next(iter(table))]["label"] if table else ""
    mean_rows = [[row["label"], len(row["values"])] + [_cell(*summary[key][m]) for m in METRICS]
                 for key, row in table.items()]
    paired_rows = [[table[key]["label"], diffs[PAIRED[0]]["n"]] + [_interval(diffs[m]) for m in PAIRED]
                   for key, diffs in paired.items()]
    labelling_rows = []
    for key, row in table.items():
        cells = []
        for m in BY_LABELLING:
            means = [summary[key][name][0] for name in (m, *(f"{o}_{m}" for o in OTHER_LABELLINGS))]
            cells.append(" / ".join(f"{v:.1f}" for v in means))
        labelling_rows.append([row["label"], *cells])
    reid_rows = []
    for key, row in table.items():
        for side, name in (("alone", "no"), ("lookalike", "yes")):
            reid_rows.append([row["label"], name] + [_reid_cell(row["reid"][b][side])
                                                     for b in (*GAP_BUCKETS, "all")])
    s, stats = report["settings"], report["val_stats"]
    timing = "; ".join(
        f"{name} {np.mean(times):.2f} s/iter" for name, times in report["sec_per_iter"].items()
    )
    configs = ", ".join(f"`{path}` ({sha})" for path, sha in report["configs"].items())
    lines = [
        "# Occlusion benchmark",
        "",
        f"Commit {report['commit']}; date {report['date']}; command `{report['command']}`; device "
        f"{report['device']} ({report['host']}); wall time of this invocation {report['wall_min']:.1f} min "
        "(runs it reused not counted).  ",
        f"Configs (sha1 without comments): {configs}.",
        "",
    ]
    if report.get("missing"):
        lines += [
            f"**Partial table**: {len(report['missing'])} chosen runs are not finished "
            f"({', '.join(report['missing'])}); rows average the seeds they have (n).",
            "",
        ]
    lines += [
        f"Mean ± sd over training seeds (n = seeds), {s['iters']} iterations per variant after a "
        f"{s['image_iters']}-iteration image stage of the same seed:",
        "",
        tabulate(mean_rows, headers=["variant", "n", *METRICS.values()], tablefmt="pipe", disable_numparse=True),
    ]
    if paired_rows:
        lines += [
            "",
            f"Each row minus {reference}, paired by seed: mean [95% t-interval over seeds]:",
            "",
            tabulate(paired_rows, headers=["variant - reference", "n", *(f"Δ {METRICS[m]}" for m in PAIRED)],
                     tablefmt="pipe", disable_numparse=True),
        ]
    lines += [
        "",
        "The same detections under each labelling, means over seeds: own IDs / IoU-linked / oracle:",
        "",
        tabulate(labelling_rows, headers=["variant", *BY_LABELLING], tablefmt="pipe", disable_numparse=True),
        "",
        "Re-identification after a gap of k frames (own identities; returns summed over seeds): "
        "kept / new / other %, (returns):",
        "",
        tabulate(reid_rows, headers=["variant", "look-alike in view", *(f"k {b}" for b in GAP_BUCKETS), "all"],
                 tablefmt="pipe", disable_numparse=True),
        "",
        f"Data: synthetic moving shapes, occlusion {s['occlusion']}, data seed {s['data_seed']}, {s['videos']} "
        f"train / {s['val_videos']} val videos of {s['frames']} frames at {s['height']}x{s['width']}. Val split: "
        f"{stats['tracks']} tracks, {stats['hidden_tracks']} of them fully hidden inside the video "
        f"({stats['hidden_frames']} hidden frames), {stats['videos_with_same_class_pair']} of "
        f"{stats['videos']} videos with two or more instances of one class (look-alikes).",
        "",
        f"Budget: {report['frames_per_iter']} frames per iteration. Training speed (median s/iter, mean over "
        f"the runs this invocation trained): {timing or 'n/a (no run of this invocation was long enough to time)'}.",
        "",
        "Columns: AP, HOTA, AssA, IDF1, ID switches and re-ID kept % score each row's own identities (the "
        "floor's and the '+ IoU linking' rows' are IoU-linked); IoU-linked AP and oracle AP score the same "
        "detections with greedy mask-IoU linking and with GT identities (tools/analyze_tracking.py). HOTA / "
        "AssA / IDF1: TrackEval, class-agnostic, detections with class probability >= 0.5. See "
        "docs/OCCLUSION_BENCHMARK.md.",
    ]
    return "\n".join(lines) + "\n"


def bar_chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(report["table"])
    labels = [report["table"][k]["label"] for k in keys]
    y = np.arange(len(keys))
    fig, (ax, ax_assa) = plt.subplots(1, 2, figsize=(12, 0.5 * len(keys) + 1.5), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 1]})
    for k, (metric, name) in enumerate((("AP", "own IDs"), ("link_AP", "IoU-linked"), ("oracle_AP", "oracle"))):
        means, sds = zip(*(report["summary"][key][metric] for key in keys))
        ax.barh(y + (k - 1) * 0.27, means, height=0.27, xerr=np.nan_to_num(sds), label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("video mask AP (mean ± sd over seeds)")
    ax.legend(loc="lower right")
    means, sds = zip(*(report["summary"][key]["AssA"] for key in keys))
    ax_assa.barh(y, means, xerr=np.nan_to_num(sds), color="grey")
    ax_assa.set_xlabel("AssA (own IDs)")
    ax.set_title(f"Occlusion benchmark ({report['settings']['iters']} iterations per variant)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def write_report(results_dir, *, variants, chosen, runs, settings, frames_per_iter, image_configs, command,
                 device, host, wall_min, val_stats, missing=()):
    """Summarize ``runs`` ({(seed, name): result.json dict}) and write occlusion.{md,json,png};
    ``missing`` names the chosen runs not finished yet (a partial table says so)."""
    table = per_seed(variants, chosen, runs)
    summary, paired = summarize(table)
    used = [variants[n][1] for n in chosen] + sorted({image_configs[n] for _, n in runs if n in image_configs})
    commit, configs = provenance(used)
    sec_per_iter = OrderedDict()
    for (_, name), result in sorted(runs.items()):
        if result.get("sec_per_iter"):
            sec_per_iter.setdefault(name, []).append(result["sec_per_iter"])
    report = dict(
        commit=commit, configs=configs, date=time.strftime("%Y-%m-%d %H:%M %Z"), command=command, device=device,
        host=host, wall_min=wall_min, settings=settings, val_stats=val_stats, frames_per_iter=frames_per_iter,
        sec_per_iter=sec_per_iter, table=table, summary=summary, paired=paired,
        runs={f"seed{seed}/{name}": r for (seed, name), r in sorted(runs.items())}, missing=list(missing),
    )
    os.makedirs(results_dir, exist_ok=True)
    text = markdown(report)
    atomic_write(os.path.join(results_dir, "occlusion.json"), lambda f: json.dump(report, f, indent=2), "w")
    atomic_write(os.path.join(results_dir, "occlusion.md"), lambda f: f.write(text), "w")
    bar_chart(report, os.path.join(results_dir, "occlusion.png"))
    print(text)
    print(f"Wrote {os.path.join(results_dir, 'occlusion.md')}, occlusion.json, occlusion.png")
    return report
