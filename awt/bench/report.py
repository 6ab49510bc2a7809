"""The sweep's summary: ``summary.csv`` and ``summary.md`` (one row per run) and ``summary.png``; for
runs repeated over seeds, their mean and standard deviation (``summary_seeds.csv``, a section of
``summary.md``, one ``..._seeds.json`` beside their run records, error bars in the plot); for video
datasets run over their splits, the same over the splits (``summary_splits.csv``, ``..._splits.json``)."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..files import atomic_write, atomic_write_text
from .records import write_record

if TYPE_CHECKING:
    from .config import BenchConfig

log = logging.getLogger(__name__)

COLUMNS = ("backbone", "pretrained", "dataset", "method", "views", "descriptions_per_class", "seed", "images",
           "unreadable", "top1", "top5", "mean_per_class_recall", "wall_time_s", "images_per_s")
EXTRA_COLUMNS = ("classes", "encode_time_s", "score_time_s", "feature_source", "device", "precision")
METRICS = ("top1", "top5", "mean_per_class_recall")
_GROUP = ("backbone", "dataset", "method", "views", "descriptions_per_class")   # runs that differ by seed alone
SEED_COLUMNS = ("backbone", "pretrained", "dataset", "method", "views", "descriptions_per_class", "runs", "seeds",
                *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")))
SEEDS_FORMAT = "awt-bench-seeds"
SPLITS_FORMAT = "awt-bench-splits"
# runs that differ by split alone (``dataset`` is then the entry's name, its splits' group)
_SPLIT_GROUP = ("backbone", "dataset", "method", "views", "descriptions_per_class", "seed")
_HEADERS = {"descriptions_per_class": "M", "mean_per_class_recall": "mean recall", "wall_time_s": "wall s",
            "images_per_s": "img/s", "views": "N", "top1": "top-1", "top5": "top-5"}


def _fmt(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if column in ("top1", "top5", "mean_per_class_recall"):
            return f"{value:.2f}"
        if column.endswith("_s"):
            return f"{value:.3g}" if value < 10 else f"{value:.1f}"
        return f"{value:.4g}"
    return str(value)


def summary_rows(records: Sequence[dict]) -> list[dict]:
    return [{c: r.get(c) for c in COLUMNS + EXTRA_COLUMNS} for r in records]


def csv_text(records: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS + EXTRA_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in summary_rows(records):
        writer.writerow(row)
    return out.getvalue()


def markdown_table(records: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    head = "| " + " | ".join(_HEADERS.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---:" if c not in ("backbone", "pretrained", "dataset", "method") else "---"
                          for c in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c), c) for c in columns) + " |" for r in records]
    return "\n".join([head, rule, *body])


def markdown_text(records: Sequence[dict], config: "BenchConfig | None" = None) -> str:
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# AWT benchmark: {config.name if config else 'summary'}", ""]
    if config is not None:
        lines.append(f"Config `{config.path}`, summarised {when}.")
    devices = sorted({f"{r.get('device')} ({r.get('device_name')}, {r.get('precision')})" for r in records})
    versions = sorted({" ".join(f"{k} {v}" for k, v in r.get("versions", {}).items() if k != "platform")
                       for r in records})
    if devices:
        lines.append("Device: " + "; ".join(devices) + ".")
    if versions:
        lines.append("Versions: " + "; ".join(versions) + ".")
    lines += ["", markdown_table(records), "",
              "N: random views per image besides view 0; M: descriptions per class (both as the method uses "
              "them: 0 where it ignores them). images: those scored; unreadable: those that could not be read "
              "(left out of the metrics; listed in each run's record). Metrics in %: top-1, top-5, mean "
              "per-class recall over the classes present. Wall time: encoding the views the method uses (measured once, when the "
              "features were computed; for view-0 methods scored from a larger set, the share of its views) "
              "plus scoring; model loading and the one-off class-prompt encoding are not included.", ""]
    return "\n".join(lines)


def _over_groups(records: Sequence[dict], by: Sequence[str], over: str) -> list[dict]:
    """One row per group of two or more records equal in ``by`` and differing in ``over``: each
    metric's mean and standard deviation over them (population, ``ddof = 0``), in plan order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r.get(c) for c in by)].append(r)
    rows = []
    for runs in groups.values():
        if len(runs) < 2:
            continue
        row = {c: runs[0].get(c) for c in ("backbone", "pretrained", *by[1:])}
        row["runs"], row[f"{over}s"] = len(runs), " ".join(str(r.get(over)) for r in runs)
        for m in METRICS:
            values = [float(r[m]) for r in runs]
            mean = _mean(values)
            row[f"{m}_mean"] = round(mean, 4)
            row[f"{m}_std"] = round(math.sqrt(_mean([(v - mean) ** 2 for v in values])), 4)
        row["_records"] = runs
        rows.append(row)
    return rows


def seed_groups(records: Sequence[dict]) -> list[dict]:
    """One row per (backbone, dataset, method, N, M) run over several seeds (a method repeated with
    ``settings.repeats``, or a swept seed): its seeds, and each metric's mean and standard deviation
    over them (population, ``ddof = 0``, as WaffleCLIP's ``np.std`` reports it), in plan order."""
    return _over_groups(records, _GROUP, "seed")


def split_groups(records: Sequence[dict]) -> list[dict]:
    """One row per (backbone, video dataset, method, N, M, seed) run over several splits (UCF101's,
    HMDB51's and Kinetics-600's three): its splits, and each metric's mean and standard deviation over
    them (population, ``ddof = 0``, as ``np.std``), the figures zero-shot video papers report."""
    split = [dict(r, dataset=r["split_of"], _dataset=r["dataset"]) for r in records if r.get("split") is not None]
    return _over_groups(split, _SPLIT_GROUP, "split")


def groups_csv_text(groups: Sequence[dict], over: str = "seed") -> str:
    out = io.StringIO()
    columns = [c if c != "seeds" else f"{over}s" for c in SEED_COLUMNS]
    if over == "split":
        columns.insert(columns.index("runs"), "seed")
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in groups:
        writer.writerow(row)
    return out.getvalue()


def groups_markdown(groups: Sequence[dict], over: str = "seed") -> str:
    each = over == "split"   # the top-1 of each split too: few, and each is a protocol's own number
    head = ("| backbone | dataset | method | N | M | runs | " + ("top-1 per split | " if each else "")
            + "top-1 | top-5 | mean recall |")
    rule = "|---|---|---|---:|---:|---:|" + ("---:|" if each else "") + "---:|---:|---:|"
    body = [f"| {g['backbone']} | {g['dataset']} | {g['method']} | {g['views']} | {g['descriptions_per_class']} | "
            f"{g['runs']} | " + (" / ".join(f"{r['top1']:.2f}" for r in g["_records"]) + " | " if each else "")
            + " | ".join(f"{g[m + '_mean']:.2f} ± {g[m + '_std']:.2f}" for m in METRICS) + " |"
            for g in groups]
    return "\n".join([head, rule, *body])


def _group_record(group: dict, over: str) -> dict:
    """The JSON of a group, with each run's numbers and record file (relative to this file's folder)."""
    runs = group["_records"]
    first = runs[0]
    name = f"{first['method']}_v{first['views']}_m{first['descriptions_per_class']}"

    def record(r: dict) -> str:   # a split's record is in its own dataset's folder, beside this one's
        return f"{name}_s{r.get('seed')}.json" if over == "seed" else f"../{r['_dataset']}/{name}_s{r.get('seed')}.json"

    return {"format": SEEDS_FORMAT if over == "seed" else SPLITS_FORMAT, "version": 1,
            **{c: group[c] for c in SEED_COLUMNS if c != "seeds"}, f"{over}s": [r.get(over) for r in runs],
            **({"seed": first.get("seed")} if over == "split" else {}), "std": "population (ddof 0)",
            f"per_{over}": [{over: r.get(over), "key": r.get("key"), **{m: r.get(m) for m in METRICS},
                             "record": record(r)} for r in runs]}


def _group_file(group: dict, over: str) -> str:
    name = f"{group['method']}_v{group['views']}_m{group['descriptions_per_class']}"
    return f"{name}_seeds.json" if over == "seed" else f"{name}_s{group['seed']}_splits.json"


_SECTIONS = {
    "seed": ("Over seeds", "Runs that differ by their seed alone (a method repeated with `settings.repeats`, or "
             "swept seeds): mean ± standard deviation (population) over them."),
    "split": ("Over splits", "Video datasets run over their splits (UCF101's three test lists, HMDB51's three "
              "splits, Kinetics-600's three sets of 160 new classes): each split's top-1, and mean ± standard "
              "deviation (population) over the splits, as zero-shot video papers report them."),
}


def write_summary(output: Path, records: Sequence[dict], config: "BenchConfig | None" = None) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and (with matplotlib) ``summary.png`` into ``output``;
    with runs over several seeds, also ``summary_seeds.csv`` and a ``<method>_v<N>_m<M>_seeds.json``
    beside each group's run records; with video datasets over several splits, ``summary_splits.csv``
    and a ``<method>_v<N>_m<M>_s<seed>_splits.json`` in ``runs/<backbone>/<dataset>/``."""
    output = Path(output)
    files = {"csv": output / "summary.csv", "md": output / "summary.md"}
    atomic_write_text(files["csv"], csv_text(records))
    text = markdown_text(records, config)
    for over, groups in (("seed", seed_groups(records)), ("split", split_groups(records))):
        table = output / f"summary_{over}s.csv"
        table.unlink(missing_ok=True)   # never one left from an earlier sweep
        if not groups:
            continue
        files[f"{over}s_csv"] = table
        atomic_write_text(table, groups_csv_text(groups, over))
        title, explained = _SECTIONS[over]
        text += f"\n## {title}\n\n{explained}\n\n" + groups_markdown(groups, over) + "\n"
        for g in groups:
            write_record(output / "runs" / str(g["backbone"]) / str(g["dataset"]) / _group_file(g, over),
                         _group_record(g, over))
    atomic_write_text(files["md"], text)
    png = output / "summary.png"
    try:
        if plot_summary(records, png, config):
            files["png"] = png
    except ImportError:
        log.warning("matplotlib is not installed: no summary.png (pip install 'awt[bench]')")
    return files


# -- the plot ----------------------------------------------------------------------------------------

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H")


def method_styles(methods: Sequence[str]) -> dict[str, tuple[tuple, str, str | None]]:
    """Each method's own (colour, marker, hatch): tab20's ten dark colours, then its ten light ones
    (hatched, as bars), and a marker of its own, so that no two of up to 20 methods look alike."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return {m: (tab20(order[i % 20]), _MARKERS[i % len(_MARKERS)], "//" if 10 <= i % 20 else None)
            for i, m in enumerate(methods)}

def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def plot_summary(records: Sequence[dict], path: Path, config: "BenchConfig | None" = None) -> bool:
    """Top-1 per dataset, one bar per method; plus top-1 against N and M when the config sweeps them."""
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plan import effective_settings

    views_list = config.settings.views if config else sorted({r["views"] for r in records})
    m_list = config.settings.descriptions_per_class if config else sorted({r["descriptions_per_class"] for r in records})
    has_desc = {d.name: d.descriptions is not None for d in config.datasets} if config else {}
    videos = {d.name: d.video for d in config.datasets} if config else {}   # a video dataset's views are its own
    methods = list(dict.fromkeys(r["method"] for r in records))
    groups = list(dict.fromkeys((r["backbone"], r["dataset"]) for r in records))
    multi_backbone = len({g[0] for g in groups}) > 1

    def primary(r, vary: str | None = None) -> bool:
        v, m = effective_settings(r["method"], views_list[0], m_list[0], has_desc.get(r["dataset"], True),
                                  videos.get(r["dataset"]))
        return (vary == "views" or r["views"] == v) and (vary == "m" or r["descriptions_per_class"] == m)

    panels = ["bars"] + (["views"] if len(views_list) > 1 else []) + (["m"] if len(m_list) > 1 else [])
    bar_width = max(5.0, 0.45 * len(groups) * max(1, len(methods)) + 2.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(bar_width + 2 + 6 * (len(panels) - 1), 4.5), squeeze=False,
                             gridspec_kw={"width_ratios": [bar_width] + [5] * (len(panels) - 1)})
    style = method_styles(methods)

    ax = axes[0][0]
    # each method's own N and M: what it really read at the first swept values
    desc_any = any(has_desc.values()) if has_desc else True
    only_videos = next(iter(videos.values())) if videos and all(videos.values()) else None
    own = {m: effective_settings(m, views_list[0], m_list[0], desc_any, only_videos) for m in methods}
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, g in enumerate(groups):
            vals = [r["top1"] for r in records if (r["backbone"], r["dataset"]) == g and r["method"] == method
                    and primary(r)]
            if vals:
                mu = _mean(vals)
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(mu)
                errs.append(math.sqrt(_mean([(v - mu) ** 2 for v in vals])) if len(vals) > 1 else 0.0)
        if xs:
            label = f"{method} (N={own[method][0]}, M={own[method][1]})"
            colour, marker, hatch = style[method]
            bars = ax.bar(xs, ys, width, yerr=errs if any(errs) else None, color=colour, hatch=hatch,
                          edgecolor="white" if hatch else None, linewidth=0)
            ax.plot(xs, ys, linestyle="none", marker=marker, markersize=5, color=colour, markeredgecolor="black",
                    markeredgewidth=0.5)
            ax.plot([], [], marker=marker, markersize=7, color=colour, markeredgecolor="black", markeredgewidth=0.5,
                    linestyle="-", linewidth=6, label=label)   # legend: the bar's colour and the method's marker
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=4)
    for i, g in enumerate(groups):  # chance: one class in `classes`, guessed
        classes = next((r.get("classes") for r in records if (r["backbone"], r["dataset"]) == g and r.get("classes")),
                       None)
        if classes:
            ax.hlines(100.0 / classes, i - 0.45, i + 0.45, colors="0.3", linestyles=":",
                      label="chance" if i == 0 else None)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{d}\n{b}" if multi_backbone else d for b, d in groups])
    ax.set_ylabel("top-1 accuracy (%)")
    backbones = list(dict.fromkeys(
        f"{r['backbone']}" + (" (random weights)" if str(r.get("pretrained", "")).lower() in ("none", "") else "")
        for r in records))
    over = {len(g["_records"]) for g in seed_groups(records)}
    seeds = f" (mean ± std over {', '.join(map(str, sorted(over)))} seeds)" if over else ""
    at = (f"{only_videos.frames}x{only_videos.crops}x{only_videos.clips} views" if only_videos
          else f"N={views_list[0]}")
    ax.set_title(f"{', '.join(backbones)}: top-1 at {at}, M={m_list[0]}{seeds}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(bottom=0)
    ax.margins(y=0.12)
    styles = ["-", "--", ":", "-."]

    for p, panel in enumerate(panels[1:], start=1):
        ax = axes[0][p]
        field = "views" if panel == "views" else "descriptions_per_class"
        for method in methods:
            for gi, g in enumerate(groups):
                by_x: dict[int, list[float]] = defaultdict(list)
                for r in records:
                    if (r["backbone"], r["dataset"]) == g and r["method"] == method and primary(r, panel):
                        by_x[r[field]].append(r["top1"])
                if len(by_x) < 2:
                    continue  # this method does not depend on the swept number
                xs = sorted(by_x)
                label = f"{method} ({g[1]}{', ' + g[0] if multi_backbone else ''})" if len(groups) > 1 else method
                ax.plot(xs, [_mean(by_x[x]) for x in xs], marker=style[method][1], label=label, color=style[method][0],
                        linestyle=styles[gi % len(styles)], markeredgecolor="black", markeredgewidth=0.5)
        ax.set_xlabel("random views per image (N)" if panel == "views" else "descriptions per class (M)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title("accuracy against " + ("N" if panel == "views" else "M"))
        ax.set_ylim(bottom=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True
