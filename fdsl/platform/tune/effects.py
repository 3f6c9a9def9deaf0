"""The FDSL effect of each sweep setting over scratch, with its uncertainty, trend plots and verdicts.

A sweep with a seed design (`pretrain_seeds`, `finetune_seeds`) runs every setting once per
(pre-training seed p, fine-tuning seed f) and a scratch arm once per fine-tuning seed (and
fine-tuning setting). The effect of a trial is its top-1 minus the scratch top-1 of the same
fine-tuning seed and settings: **paired by fine-tuning seed**.

Method (named, standard, nothing home-made): a two-stage summary-statistics analysis of the
nested seeds. Stage 1 averages a setting's paired effects over the fine-tuning seeds of each
pre-training run; stage 2 treats the pre-training runs as the independent units and gives the mean
with a Student's t 95 % confidence interval over them (`scipy.stats.t`). The pre-training runs'
variance is therefore in the interval, not hidden by pooling. With one pre-training run the
interval is over the fine-tuning seeds and says so ("pre-training variance not measured").
A hypothesis compares two settings run by run (paired by pre-training seed index) the same way,
or one setting against scratch: held (the interval excludes 0 on the expected side), not held (it
excludes 0 on the other side) or not resolved (it spans 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy import stats

from fdsl.figures import plt, save_figure
from fdsl.platform.tune.sweep_config import DESIGN_SEEDS, FINETUNE_SEED, PRETRAIN_SEED

METHOD = (
    "two-stage summary statistics over the nested seeds: paired effects averaged over "
    "fine-tuning seeds per pre-training run, then the mean and a Student's t 95 % interval over "
    "pre-training runs (scipy.stats.t)"
)


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the Student's t interval of the mean; (mean, nan, nan) for one value."""
    x = np.asarray(list(values), dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(x))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def setting_key(params: dict, swept: Iterable[str]) -> tuple:
    """The setting a trial belongs to: its swept parameters but the design's seeds."""
    return tuple((p, params.get(p)) for p in swept if p not in DESIGN_SEEDS)


def scratch_key(params: dict) -> tuple:
    """Which scratch run pairs with a trial: its fine-tuning parameters, seed included."""
    return tuple(sorted((p, v) for p, v in params.items() if p.startswith("finetune.")))


def paired_effects(trials: list[dict], scratch: list[dict], swept: list[str], metric: str) -> dict:
    """{setting key: {pretrain seed: {finetune seed: (trial value, scratch value)}}} of finished trials."""
    arms = {
        scratch_key(s["params"]): s["metrics"][metric]
        for s in scratch
        if isinstance(s.get("metrics", {}).get(metric), (int, float))
    }
    out: dict[tuple, dict] = {}
    for t in trials:
        value = t.get("metrics", {}).get(metric)
        if t.get("status") != "done" or not isinstance(value, (int, float)):
            continue
        base = arms.get(scratch_key(t["params"]))
        if base is None:
            continue
        p, f = t["params"].get(PRETRAIN_SEED, 0), t["params"].get(FINETUNE_SEED, 0)
        out.setdefault(setting_key(t["params"], swept), {}).setdefault(p, {})[f] = (float(value), float(base))
    return out


def summarise(runs: dict) -> dict:
    """Effect summary of one setting from {pretrain seed: {finetune seed: (value, scratch)}}."""
    per_run = [np.mean([v - s for v, s in fs.values()]) for _, fs in sorted(runs.items())]
    pairs = [(v, s) for fs in runs.values() for v, s in fs.values()]
    if len(per_run) >= 2:
        mean, low, high = t_interval(per_run)
        unit = "pre-training runs"
    else:  # one pre-training run: the interval says nothing about pre-training variance
        mean, low, high = t_interval([v - s for v, s in pairs])
        unit = "fine-tuning seeds (pre-training variance not measured)"
    return {
        "effect": mean,
        "low": low,
        "high": high,
        "n_pretrain": len(runs),
        "n_finetune": max(len(fs) for fs in runs.values()),
        "n": len(pairs),
        "interval_over": unit,
        "top1": float(np.mean([v for v, _ in pairs])),
        "top1_std": float(np.std([v for v, _ in pairs], ddof=1)) if len(pairs) > 1 else 0.0,
        "scratch": float(np.mean([s for _, s in pairs])),
        "per_run": [float(e) for e in per_run],
        "wins": sum(v > s for v, s in pairs),
    }


def _matches(key: tuple, wanted: dict) -> bool:
    params = dict(key)
    return all(p in params and _same(params[p], v) for p, v in wanted.items())


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def verdicts(hypothesis: dict, effects: dict) -> list[dict]:
    """A hypothesis {"claim", "source", "better": {param: value}, "worse": {...} or absent} against
    the paired effects: one verdict per value of the swept parameters it does not name (each target,
    say), each the difference better - worse (or better - scratch) with its interval."""
    named = set(hypothesis["better"]) | set(hypothesis.get("worse") or {})
    contexts = sorted(
        {
            tuple((p, v) for p, v in key if p not in named)
            for key in effects
            if _matches(key, hypothesis["better"])
        },
        key=str,
    ) or [()]
    out = []
    for context in contexts:
        scope = {key: runs for key, runs in effects.items() if _matches(key, dict(context))}
        result = verdict(hypothesis, scope)
        if context:
            result["context"] = ", ".join(f"{p}={v}" for p, v in context)
        out.append(result)
    return out


def verdict(hypothesis: dict, effects: dict) -> dict:
    """One hypothesis against paired effects in which `better` (and `worse`) name one setting each."""
    better = [runs for key, runs in effects.items() if _matches(key, hypothesis["better"])]
    worse_spec = hypothesis.get("worse")
    worse = [runs for key, runs in effects.items() if worse_spec and _matches(key, worse_spec)]
    result = {"claim": hypothesis["claim"], "source": hypothesis.get("source", "")}
    if len(better) != 1 or (worse_spec and len(worse) != 1):
        return {**result, "verdict": "not resolved", "why": "the settings it names did not all finish"}
    runs_b = better[0]
    if worse_spec:
        runs_w = worse[0]
        common = sorted(set(runs_b) & set(runs_w))
        diffs = [
            np.mean([v - s for v, s in runs_b[p].values()]) - np.mean([v - s for v, s in runs_w[p].values()])
            for p in common
        ]
        if len(common) < 2:  # one pre-training run each: pair by fine-tuning seed
            p = common[0] if common else None
            diffs = (
                []
                if p is None
                else [runs_b[p][f][0] - runs_w[p][f][0] for f in sorted(set(runs_b[p]) & set(runs_w[p]))]
            )
    else:
        diffs = (
            summarise(runs_b)["per_run"]
            if len(runs_b) >= 2
            else [v - s for fs in runs_b.values() for v, s in fs.values()]
        )
    if len(diffs) < 2:
        return {**result, "verdict": "not resolved", "why": "fewer than two paired runs"}
    mean, low, high = t_interval(diffs)
    state = "held" if low > 0 else "not held" if high < 0 else "not resolved"
    return {**result, "verdict": state, "difference": mean, "low": low, "high": high, "n": len(diffs)}


def is_log_spaced(values: list[float]) -> bool:
    """Positive values spanning a factor of 10 or more: a log axis reads them."""
    return len(values) > 1 and min(values) > 0 and max(values) / min(values) >= 10


def trend_plots(effects: dict, swept: list[str], out: Path) -> dict[str, Path]:
    """One PNG per swept data (or pre-training) parameter: the effect (mean and 95 % interval)
    against it, one line per value of the other swept parameters (the target, ...), scratch at 0."""
    made = {}
    out.mkdir(parents=True, exist_ok=True)
    settings = {key: summarise(runs) for key, runs in effects.items()}
    for param in [p for p in swept if p not in DESIGN_SEEDS and p.startswith(("data.", "pretrain."))]:
        others = [p for p in swept if p not in DESIGN_SEEDS and p != param]
        lines: dict[tuple, list] = {}
        for key, s in settings.items():
            params = dict(key)
            lines.setdefault(tuple((o, params.get(o)) for o in others), []).append((params.get(param), s))
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        numeric = all(isinstance(x, (int, float)) for pts in lines.values() for x, _ in pts)
        labels = sorted({str(x) for pts in lines.values() for x, _ in pts})
        for other, points in sorted(lines.items(), key=lambda kv: str(kv[0])):
            points.sort(key=lambda xs: xs[0] if numeric else labels.index(str(xs[0])))
            xs = [x if numeric else labels.index(str(x)) for x, _ in points]
            ys = [100 * s["effect"] for _, s in points]
            err = [
                [100 * (s["effect"] - s["low"]) if not math.isnan(s["low"]) else 0 for _, s in points],
                [100 * (s["high"] - s["effect"]) if not math.isnan(s["high"]) else 0 for _, s in points],
            ]
            name = ", ".join(f"{o.rsplit('.', 1)[-1]}={v}" for o, v in other) or "FDSL - scratch"
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=name)
        ax.axhline(0, color="gray", linestyle="--", label="scratch (0)")
        if numeric and is_log_spaced([x for pts in lines.values() for x, _ in pts]):
            ax.set_xscale("log")
        if numeric:
            ax.set_xticks(sorted({x for pts in lines.values() for x, _ in pts}))
            ax.set_xticklabels([f"{x:g}" for x in sorted({x for pts in lines.values() for x, _ in pts})])
        else:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(param)
        ax.set_ylabel("top-1 over scratch (points)")
        ax.set_title(f"FDSL effect vs {param.rsplit('.', 1)[-1]} (mean, 95 % CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"trend_{param.replace('.', '_')}.png"
        save_figure(fig, path)
        made[param] = path
    return made
