"""Sweep reports people read: report.md, a self-contained report.html, trials.csv and plots.

    fdsl report runs/sweeps/debug

Input is what every trial of `fdsl sweep` leaves in `DIR/trials/<trial>/trial.json`:
    {"trial": name, "status": "done" | "stopped" | "error", "params": {field: value},
     "metrics": {"finetune_top1": ..., "pretrain_loss": ...},
     "curves": {"pretrain_loss": [[step, value], ...], "finetune_top1": [[epoch, value], ...]},
     "dataset": {"fingerprint": ..., "dir": ..., "cache_hit": bool}, "preview": "preview.png"}
and `DIR/sweep.json` (the sweep config). With a swept seed (`finetune.seed`, ...) the report ranks
settings by their mean and std over the seeds first (also written as settings.json), then lists
every trial. Nothing is recomputed: a report of a finished sweep takes
about a second.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from fdsl.atomic import atomic_path, atomic_write_text
from fdsl.figures import plt, save_figure
from fdsl.platform.tune import effects
from fdsl.platform.tune.effects import METHOD, is_log_spaced
from fdsl.schema import load_json

TRIALS = "trials"
TRIAL_FILE = "trial.json"
SWEEP_FILE = "sweep.json"
SETTINGS_FILE = "settings.json"
EFFECTS_FILE = "effects.json"
"""With a seed design: each setting's effect over scratch with its interval, and the verdicts."""
"""The settings ranked by their mean over seeds (`rank_settings`), when the sweep has a seed."""
TRIAL_FIELDS = {"trial": str, "params": dict, "metrics": dict}
"""What the report reads of every trial record (optional: status, curves, dataset, preview)."""
FIX = "the sweep folder is damaged or not ours: re-run the sweep into a new --out"


def collect_trials(sweep_dir: str | os.PathLike) -> list[dict]:
    """Every trial record of a sweep folder, in trial-name order."""
    root = Path(sweep_dir) / TRIALS
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: {sweep_dir} is not a folder made by `fdsl sweep`")
    records = []
    for path in sorted(root.glob(f"*/{TRIAL_FILE}")):
        record = load_json(path, TRIAL_FIELDS, FIX)
        for name, points in record.get("curves", {}).items():
            if not (isinstance(points, list) and all(_is_point(p) for p in points)):
                raise ValueError(f"{path}: field 'curves.{name}' is not a list of [x, y] number pairs; {FIX}")
        record["_dir"] = str(path.parent)
        records.append(record)
    return records


def _own_file(trial: dict) -> bool:
    """Whether the trial's preview is a file inside its own folder (a record never makes the report
    embed a file from elsewhere)."""
    name, folder = trial.get("preview"), Path(trial["_dir"]).resolve()
    if not isinstance(name, str) or not name:
        return False
    path = (folder / name).resolve()
    return path.is_file() and path.parent == folder


def _is_point(p) -> bool:
    return (isinstance(p, list) and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ranked(trials: list[dict], metric: str, mode: str) -> list[dict]:
    scored = [t for t in trials if isinstance(t.get("metrics", {}).get(metric), (int, float))]
    rest = [t for t in trials if t not in scored]
    scored.sort(key=lambda t: t["metrics"][metric], reverse=(mode == "max"))
    return scored + rest


def is_seed(param: str) -> bool:
    """Whether a swept parameter is a seed (`finetune.seed`, `data.seed`, ...): it repeats a setting."""
    return param.rsplit(".", 1)[-1] == "seed"


def rank_settings(trials: list[dict], params: list[str], metric: str, mode: str) -> list[dict]:
    """Finished trials grouped by every swept parameter but the seeds, best mean first:
    [{"params", "n", "mean", "std", "values", "trials"}] (std with ddof=1; 0 for one seed).
    Empty when no seed is swept: each setting then ran once."""
    seeds = [p for p in params if is_seed(p)]
    if not seeds:
        return []
    groups: dict[tuple, list[tuple[str, float]]] = {}
    for t in trials:
        value = t.get("metrics", {}).get(metric)
        if t.get("status") != "done" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue  # a trial stopped early or failed has no final value to average
        key = tuple((p, t["params"].get(p)) for p in params if not is_seed(p))
        groups.setdefault(key, []).append((t["trial"], float(value)))
    settings = []
    for key, members in groups.items():
        values = np.array([v for _, v in members])
        settings.append({"params": dict(key), "n": len(values), "mean": float(values.mean()),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "values": [float(v) for v in values], "trials": [name for name, _ in members]})
    settings.sort(key=lambda g: g["mean"], reverse=(mode == "max"))
    return settings


def _settings_rows(settings: list[dict]) -> tuple[list[str], list[list[str]]]:
    keys = list(settings[0]["params"]) if settings else []
    header = ["rank", *keys, "mean", "std", "seeds", "per seed"]
    rows = [[str(i + 1), *[_fmt(g["params"][k]) for k in keys], f"{g['mean']:.4f}", f"{g['std']:.4f}",
             str(g["n"]), " ".join(f"{v:.3f}" for v in g["values"])] for i, g in enumerate(settings)]
    return header, rows


def csv_cell(value):
    """A cell a spreadsheet shows as text: strings starting with = + - @ (or a tab or carriage return)
    get a leading quote, so a trial string is never run as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(path: Path, trials: list[dict], params: list[str], metrics: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([csv_cell(c) for c in ["trial", "status", *params, *metrics, "dataset"]])
        for t in trials:
            row = [t["trial"], t.get("status", ""), *[t["params"].get(p, "") for p in params],
                   *[t.get("metrics", {}).get(m, "") for m in metrics],
                   t.get("dataset", {}).get("fingerprint", "")]
            writer.writerow([csv_cell(c) for c in row])


def curve_label(trial: dict, params: list[str]) -> str:
    """A legend entry that says what a trial swept: `00001 num_classes=8 lr=0.003`."""
    values = " ".join(f"{p.rsplit('.', 1)[-1]}={_fmt(trial['params'][p])}" for p in params
                      if p in trial.get("params", {}))
    return f"{trial['trial'].rsplit('_', 1)[-1]} {values}".strip()


def _plots(out: Path, trials: list[dict], params: list[str], metric: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}

    scored = [t for t in trials if isinstance(t.get("metrics", {}).get(metric), (int, float))]
    params = [p for p in params if not is_seed(p)]  # a seed repeats a setting: it is no parameter
    if params and scored:
        fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.2), squeeze=False)
        for ax, param in zip(axes[0], params, strict=True):
            xs = [t["params"].get(param) for t in scored]
            ys = [t["metrics"][metric] for t in scored]
            if all(isinstance(x, (int, float)) for x in xs):
                ax.scatter(xs, ys)
                if all(isinstance(x, int) for x in xs):
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if is_log_spaced(xs):  # lr 5e-4 .. 2e-3 and the like: log-spaced values, a log axis
                    ax.set_xscale("log")
                    ticks = sorted(set(xs))
                    if len(ticks) <= 8:
                        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
                        ax.minorticks_off()
            else:
                labels = sorted({str(x) for x in xs})
                ax.scatter([labels.index(str(x)) for x in xs], ys)
                ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel(param)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{metric} vs each swept parameter")
        fig.tight_layout()
        made["metric_vs_params"] = out / "metric_vs_params.png"
        save_figure(fig, made["metric_vs_params"])
    curves = sorted({name for t in trials for name, points in t.get("curves", {}).items() if points})
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4), squeeze=False)
        for ax, name in zip(axes[0], curves, strict=True):
            for t in trials:
                points = t.get("curves", {}).get(name)
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], label=curve_label(t, params),
                            alpha=0.8)
            ax.set_title(name)
            ax.set_xlabel("epoch" if name.startswith("finetune") else "step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are counts
            ax.grid(alpha=0.3)
        if axes[0][-1].get_legend_handles_labels()[0]:
            fig.legend(*axes[0][-1].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5),
                       fontsize=6, ncol=1 if len(trials) <= 24 else 2)
        fig.tight_layout()
        made["learning_curves"] = out / "learning_curves.png"
        save_figure(fig, made["learning_curves"])
    return made


def collect_scratch(sweep_dir: Path) -> list[dict]:
    """The scratch arm's records of a sweep with a seed design (scratch/<key>/trial.json)."""
    return [load_json(p, TRIAL_FIELDS, FIX) for p in sorted((sweep_dir / "scratch").glob(f"*/{TRIAL_FILE}"))]


def effect_section(root: Path, trials: list[dict], sweep: dict, params: list[str], metric: str) -> dict:
    """Effects over scratch, verdicts and trend plots of a sweep with a seed design (else {})."""
    if not (sweep.get("pretrain_seeds") or sweep.get("finetune_seeds")):
        return {}
    scratch = collect_scratch(root)
    paired = effects.paired_effects(trials, scratch, params, metric)
    rows = []
    for key, runs in sorted(paired.items(), key=lambda kv: str(kv[0])):
        rows.append({"params": dict(key), **effects.summarise(runs)})
    baselines: dict[str, dict] = {}  # raw-pixel baselines per target (the scratch runs' subsets)
    for s in scratch:
        where = ", ".join(f"{p}={v}" for p, v in sorted(s["params"].items()) if p != effects.FINETUNE_SEED)
        for m in ("logreg_top1", "knn1_top1"):  # the fine-tuning summary's flat baseline_* numbers
            value = s["metrics"].get(f"baseline_{m}")
            if isinstance(value, (int, float)):
                baselines.setdefault(where or "target", {}).setdefault(m, []).append(value)
    baselines = {w: {m: sum(v) / len(v) for m, v in ms.items()} for w, ms in baselines.items()}
    verdicts = [v for h in sweep.get("hypotheses", []) for v in effects.verdicts(h, paired)]
    plots = effects.trend_plots(paired, params, root / "plots") if paired else {}
    result = {"method": effects.METHOD, "metric": metric, "settings": rows, "verdicts": verdicts,
              "scratch": [{"params": s["params"], metric: s["metrics"].get(metric)} for s in scratch],
              "pixel_baselines": baselines, "plots": {k: str(v) for k, v in plots.items()}}
    atomic_write_text(root / EFFECTS_FILE, json.dumps(result, indent=1) + "\n")
    header = ["setting", "FDSL - scratch (points)", "95 % CI", "n (pre-train x fine-tune)", "wins",
              "FDSL top-1", "scratch top-1", "interval over"]
    table = [[", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items()) or "(base)",
              f"{100 * r['effect']:+.1f}",
              "n/a" if r["low"] != r["low"] else f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]",
              f"{r['n_pretrain']} x {r['n_finetune']}", f"{r['wins']}/{r['n']}",
              f"{100 * r['top1']:.1f} +- {100 * r['top1_std']:.1f}", f"{100 * r['scratch']:.1f}",
              r["interval_over"]] for r in rows]
    with atomic_path(root / "effects.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[csv_cell(c) for c in row] for row in table])
    lines = [f"- **{v['verdict']}**: {v['claim']}" + (f" [{v['context']}]" if v.get("context") else "")
             + (f" ({v['source']})" if v["source"] else "")
             + (f": difference {100 * v['difference']:+.1f} points, 95 % CI [{100 * v['low']:+.1f}, "
                f"{100 * v['high']:+.1f}], n = {v['n']}" if "difference" in v else f": {v.get('why', '')}")
             for v in verdicts]
    return {"header": header, "table": table, "verdicts": lines, "plots": plots, "baselines": baselines}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_report(sweep_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, report.html, trials.csv and plots/ into the sweep folder; returns the paths."""
    root = Path(sweep_dir)
    trials = collect_trials(root)
    sweep = load_json(root / SWEEP_FILE, {"metric": str, "mode": str}, FIX) if (root / SWEEP_FILE).is_file() \
        else {}
    effect = effect_section(root, trials, sweep, sorted({p for t in trials for p in t.get("params", {})}),
                            sweep.get("metric", "finetune_top1"))
    metric, mode = sweep.get("metric", "finetune_top1"), sweep.get("mode", "max")
    params = sorted({p for t in trials for p in t.get("params", {})})
    metrics = sorted({m for t in trials for m in t.get("metrics", {})}, key=lambda m: (m != metric, m))
    ranked = _ranked(trials, metric, mode)
    best = ranked[0] if ranked and metric in ranked[0].get("metrics", {}) else None
    settings = rank_settings(trials, params, metric, mode)
    atomic_write_text(root / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")
    set_header, set_rows = _settings_rows(settings)
    seeds = ", ".join(p for p in params if is_seed(p))

    paths = {"csv": root / "trials.csv", "md": root / "report.md", "html": root / "report.html",
             "settings": root / SETTINGS_FILE}
    if effect:
        paths.update({"effects": root / EFFECTS_FILE, "effects_csv": root / "effects.csv"})
    write_csv(paths["csv"], ranked, params, metrics)
    plots = _plots(root / "plots", trials, params, metric)
    thumbs = {t["trial"]: Path(t["_dir"]) / t["preview"] for t in trials if _own_file(t)}

    title = f"Sweep report: {sweep.get('name', root.name)}"
    summary = (f"{len(trials)} trials ({sum(t.get('status') == 'done' for t in trials)} finished, "
               f"{sum(t.get('status') == 'stopped' for t in trials)} stopped early by the scheduler, "
               f"{sum(t.get('status') == 'error' for t in trials)} failed); metric `{metric}` ({mode}); "
               f"base preset `{sweep.get('base', '?')}`, search `{sweep.get('search', '?')}`, "
               f"scheduler `{sweep.get('scheduler', '?')}`.")
    header = ["trial", "status", *params, *metrics]
    rows = [[t["trial"], t.get("status", ""), *[_fmt(t["params"].get(p, "")) for p in params],
             *[_fmt(t.get("metrics", {}).get(m, "")) for m in metrics]] for t in ranked]

    md = [f"# {title}", "", summary, ""]
    if effect:
        base = "; ".join(f"{w}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in ms.items())
                         for w, ms in effect["baselines"].items())
        md += ["## Effect over scratch", "", f"Paired by fine-tuning seed; method: {METHOD}.",
               f"Raw-pixel baselines on the same subsets: {base}." if base else "", "",
               "| " + " | ".join(effect["header"]) + " |", "|" + "---|" * len(effect["header"])]
        md += ["| " + " | ".join(r) + " |" for r in effect["table"]] + [""]
        if effect["verdicts"]:
            md += ["### Hypotheses", "", *effect["verdicts"], ""]
        md += [f"![trend of {p}](plots/{path.name})" for p, path in effect["plots"].items()] + [""]
    if settings:
        md += [f"## Settings ranked by mean {metric} over seeds ({seeds})", "",
               "Each setting ran once per seed; rank by the mean, read the spread beside it.", "",
               "| " + " | ".join(set_header) + " |", "|" + "---|" * len(set_header)]
        md += ["| " + " | ".join(r) + " |" for r in set_rows] + [""]
    if best:
        md += ["## Best trial", "", f"`{best['trial']}`: {metric} = {_fmt(best['metrics'][metric])}", ""]
        md += [f"- `{k}` = `{v}`" for k, v in sorted(best["params"].items())] + [""]
    md += ["## All trials (best first)", "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    for key, label in (("metric_vs_params", "Metric vs each swept parameter"),
                       ("learning_curves", "Learning curves")):
        if key in plots:
            md += [f"## {label}", "", f"![{label}](plots/{plots[key].name})", ""]
    if thumbs:
        md += ["## Data sets (preview of each trial's data)", ""]
        md += [f"- `{name}`: ![{name}]({os.path.relpath(p, root)})" for name, p in thumbs.items()]
    atomic_write_text(paths["md"], "\n".join(md) + "\n")

    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             ".wide{overflow-x:auto;max-width:100%}"
             "tr.best{background:#e6ffe6}img.plot{max-width:100%}figure{display:inline-block;margin:6px}"
             "figcaption{font-size:12px;text-align:center}</style></head><body>",
             f"<h1>{esc(title)}</h1><p>{esc(summary.replace('`', ''))}</p>"]
    if effect:
        base = "; ".join(f"{w}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in ms.items())
                         for w, ms in effect["baselines"].items())
        parts.append(f"<h2>Effect over scratch</h2><p>Paired by fine-tuning seed; method: {esc(METHOD)}."
                     + (f" Raw-pixel baselines on the same subsets: {esc(base)}." if base else "") + "</p>"
                     "<div class='wide'><table id='effects'><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in effect["header"]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in effect["table"]]
        parts.append("</table></div>")
        if effect["verdicts"]:
            items = "".join(f"<li>{esc(v.removeprefix('- ').replace('**', ''))}</li>"
                            for v in effect["verdicts"])
            parts.append(f"<h3>Hypotheses</h3><ul id='verdicts'>{items}</ul>")
        parts += [f"<img class='plot trend' alt='trend of {esc(p)}' src='{_data_uri(path)}'>"
                  for p, path in effect["plots"].items()]
    if settings:
        parts.append(f"<h2>Settings ranked by mean {esc(metric)} over seeds ({esc(seeds)})</h2>"
                     "<table id='settings'><tr>" + "".join(f"<th>{esc(h)}</th>" for h in set_header)
                     + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in set_rows]
        parts.append("</table>")
    if best:
        items = "".join(f"<li><code>{esc(k)}</code> = <code>{esc(str(v))}</code></li>"
                        for k, v in sorted(best["params"].items()))
        parts.append(f"<h2>Best trial</h2><p><code>{esc(best['trial'])}</code>: {esc(metric)} = "
                     f"{esc(_fmt(best['metrics'][metric]))}</p><ul>{items}</ul>")
    parts.append("<h2>All trials (best first)</h2><div class='wide'><table id='trials'><tr>"
                 + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for i, r in enumerate(rows):
        cls = " class='best'" if best and i == 0 else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table></div>")
    for key, label in (("metric_vs_params", "Metric vs each swept parameter"),
                       ("learning_curves", "Learning curves")):
        if key in plots:
            parts.append(f"<h2>{label}</h2><img class='plot' id='{key}' alt='{label}' "
                         f"src='{_data_uri(plots[key])}'>")
    if thumbs:
        parts.append("<h2>Data sets</h2>")
        parts += [f"<figure><img class='thumb' width='240' alt='{esc(n)}' src='{_data_uri(p)}'>"
                  f"<figcaption>{esc(n)}</figcaption></figure>" for n, p in thumbs.items()]
    # counts the images the browser decoded: a headless browser test reads it back from the DOM
    parts.append("<script>window.addEventListener('load',()=>{const ok=[...document.images]"
                 ".filter(i=>i.complete&&i.naturalWidth>0).length;"
                 "document.body.dataset.imagesLoaded=ok;});</script></body></html>")
    atomic_write_text(paths["html"], "\n".join(parts))
    paths.update({f"plot_{k}": v for k, v in plots.items()})
    return paths

