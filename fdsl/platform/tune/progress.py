"""The console's view of a running sweep: trials done / running / pending and the best so far.

A Tune callback on the driver feeding `fdsl.platform.console.Progress`: a bar on a terminal, else a
line at most every `console.EVERY_S` seconds and one whenever a trial ends, e.g.
`sweep: trial 2/4 (50%), 1 running, 1 pending, 0 failed, best finetune_top1 0.812, ETA 1m05s`.
"""

from __future__ import annotations

import math

from ray import tune

from fdsl.platform.console import Progress
from fdsl.platform.tune.sweep_config import SweepConfig


def expected_trials(sweep: SweepConfig) -> int:
    """How many trials the sweep runs: num_samples x the grid's combinations (grids only enumerate
    in grid search; random search samples them)."""
    grids = [len(values) for spec in sweep.design_space().values() for kind, values in spec.items()
             if kind == "grid"]
    return sweep.num_samples * (math.prod(grids) if sweep.search == "grid" else 1)


class SweepProgress(tune.Callback):
    def __init__(self, total: int, metric: str, mode: str):
        self.total, self.metric, self.mode = total, metric, mode
        self.best: float | None = None
        self.ended = 0
        self._progress: Progress | None = None

    def __getstate__(self):  # Tune saves its callbacks with the sweep's state: not the live bar
        return {**self.__dict__, "_progress": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, int | float) and not math.isnan(value):
            better = max if self.mode == "max" else min
            self.best = value if self.best is None else better(self.best, value)

    def on_step_end(self, iteration, trials, **info):
        if self._progress is None:
            self._progress = Progress("sweep", self.total, unit="trial")
        states = [t.status for t in trials]
        done, failed = sum(s in ("TERMINATED", "ERROR") for s in states), states.count("ERROR")
        running = sum(s == "RUNNING" for s in states)
        pending = max(0, self.total - done - running)
        best = f", best {self.metric} {self.best:.3f}" if self.best is not None else ""
        ended, self.ended = done > self.ended, done
        self._progress.update(done, f"{running} running, {pending} pending, {failed} failed{best}",
                              force=ended)  # a line whenever a trial ends

    def on_experiment_end(self, trials, **info):
        if self._progress is not None:
            self._progress.close()
