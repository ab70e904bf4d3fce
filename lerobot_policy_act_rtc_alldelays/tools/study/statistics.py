"""Per-cell statistics of the evaluated episodes (success counts with Wilson 95% intervals over episodes and
seed-bootstrap ones over training seeds and episodes, and the chunk-join discontinuity) and of the models'
prefix reliance, one row per cell."""

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy.stats import binomtest

from .settings import ACT_BLEND_MODE, TEMPORAL_ENSEMBLE
from .variants import PEERS, VARIANTS


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion, from the counts."""
    if n <= 0:
        raise ValueError(f"A Wilson interval needs at least one trial, got n={n}.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n={n}, got {successes}.")
    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


BOOTSTRAP_RESAMPLES = 10_000


def seed_bootstrap_interval(
    successes: Sequence[int], episodes: Sequence[int], rng_seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """95% percentile interval of a cell's success rate under a two-stage bootstrap: draw the training seeds
    with replacement, then each drawn seed's episodes with replacement, and pool the drawn successes over the
    drawn episodes. `successes[i]` of `episodes[i]` are the i-th training seed's counts.

    Two-stage, because the seeds' success rates differ more than their episodes' chance explains, so an
    interval over episodes alone is too narrow, while one over seeds alone would ignore the episodes' chance
    (zero width with one seed, where this is the episode bootstrap). Percentile, because it stays inside
    [0, 1] and assumes no normal shape of a skewed, lumpy bootstrap distribution over a few seeds."""
    k, n = np.asarray(successes), np.asarray(episodes)
    rng = np.random.default_rng(rng_seed)
    drawn = rng.integers(k.size, size=(resamples, k.size))
    # A drawn seed's episodes, drawn with replacement, succeed Binomial(its episodes, its rate) times: one
    # number per drawn seed rather than one per episode.
    drawn_successes = rng.binomial(n[drawn], k[drawn] / n[drawn])
    rates = drawn_successes.sum(axis=1) / n[drawn].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def cell_rng_seed(key: tuple) -> int:
    """A fixed seed per cell, the same in every process (unlike `hash`, which Python salts per process), so
    that a rewritten summary reproduces its bootstrap intervals exactly."""
    return int.from_bytes(hashlib.sha256(json.dumps(key).encode()).digest()[:8], "little")


INTERVAL_HIGH = {"wilson": "ci95_high", "seed": "seed_ci95_high"}


def not_worse(
    candidate: dict[str, Any], reference: dict[str, Any], interval: Literal["wilson", "seed"]
) -> bool:
    """Whether the reference's success rate lies inside or below the candidate's 95% interval of that kind
    (two summary rows): the candidate is not shown worse than the reference. No default, so that a verdict
    names the interval it rests on."""
    if interval not in INTERVAL_HIGH:
        raise ValueError(f"interval must be one of {sorted(INTERVAL_HIGH)}, got {interval!r}.")
    return reference["success_rate"] <= candidate[INTERVAL_HIGH[interval]]


# `steps`: the budget's nominal steps, so that the rows of a budget scan do not pool.
# `actions` and `relative`: what a row measured (position targets or MetaWorld's deltas; relative actions).
CELL_KEYS = ("budget", "steps", "task", "demos", "variant", "mode", "delay", "actions", "relative")
DIAGNOSTIC_KEYS = ("budget", "steps", "task", "demos", "variant", "delay")
FIGURES = ("prefix_reliance", "prefix_change", "observation_change")  # of a model's diagnostic


def group_by(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        cells.setdefault(tuple(record[k] for k in keys), []).append(record)
    return cells


def summarize(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell (budget, steps, task, demos, variant, mode, delay), pooling its training seeds:
    Wilson's interval over its episodes (`ci95_*`) and the seed bootstrap's over its seeds and episodes
    (`seed_ci95_*`)."""
    rows = []
    for key, group in group_by(episodes, CELL_KEYS).items():
        n, successes = len(group), sum(e["success"] for e in group)
        low, high = wilson_interval(successes, n)
        ratios = [e["discontinuity"] for e in group if e["discontinuity"] is not None]
        jumps = [j for e in group for j in e.get("jumps", [])]
        inside_count = sum(e.get("inside_count", 0) for e in group)
        inside_mean = sum(e.get("inside_sum", 0.0) for e in group) / inside_count if inside_count else None
        per_seed = []
        for seed in sorted({e["train_seed"] for e in group}):
            seed_group = [e for e in group if e["train_seed"] == seed]
            seed_ratios = [e["discontinuity"] for e in seed_group if e["discontinuity"] is not None]
            per_seed.append(
                {
                    "train_seed": seed,
                    "train_steps": seed_group[0]["train_steps"],
                    "train_seconds": seed_group[0]["train_seconds"],
                    "episodes": len(seed_group),
                    "successes": sum(e["success"] for e in seed_group),
                    "discontinuity_mean": float(np.mean(seed_ratios)) if seed_ratios else None,
                }
            )
        seed_low, seed_high = seed_bootstrap_interval(
            [s["successes"] for s in per_seed], [s["episodes"] for s in per_seed], cell_rng_seed(key)
        )
        rows.append(
            {
                **dict(zip(CELL_KEYS, key, strict=True)),
                "train_seeds": [s["train_seed"] for s in per_seed],
                "train_steps": [s["train_steps"] for s in per_seed],
                "episodes": n,
                "successes": successes,
                "success_rate": successes / n,
                "ci95_low": low,
                "ci95_high": high,
                "seed_ci95_low": seed_low,
                "seed_ci95_high": seed_high,
                "discontinuity_mean": float(np.mean(ratios)) if ratios else None,
                "discontinuity_std": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else None,
                "discontinuity_pooled": (
                    float(np.mean(jumps)) / inside_mean if jumps and inside_mean else None
                ),
                "jump_mean": float(np.mean(jumps)) if jumps else None,
                "mean_steps": float(np.mean([e["episode_steps"] for e in group])),
                "per_seed": per_seed,
            }
        )
    return rows


def summarize_diagnostics(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (budget, steps, task, demos, variant, delay): the prefix reliance's mean over training
    seeds, with each seed's figures."""
    rows = []
    for key, group in group_by(diagnostics, DIAGNOSTIC_KEYS).items():
        per_seed = sorted(group, key=lambda d: d["train_seed"])
        rows.append(
            {
                **dict(zip(DIAGNOSTIC_KEYS, key, strict=True)),
                **{f"{name}_mean": float(np.mean([d[name] for d in per_seed])) for name in FIGURES},
                "per_seed": [{k: d[k] for k in ("train_seed", *FIGURES)} for d in per_seed],
            }
        )
    return sorted(rows, key=lambda row: row_order({**row, "mode": "prefix"}))


def expand_delay_zero(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds the discard row at delay 0 of each variant of this policy: the same episodes as prefix at delay
    0 (the peers have no such pair)."""
    extra = []
    for row in rows:
        if row["variant"] not in PEERS and row["mode"] == "prefix" and row["delay"] == 0:
            extra.append({**row, "mode": "discard", "same_episodes_as": "prefix, delay 0"})
    return sorted(rows + extra, key=row_order)


def row_order(row: dict[str, Any]) -> tuple:
    modes = ("prefix", "discard", ACT_BLEND_MODE, TEMPORAL_ENSEMBLE)
    return (
        row["budget"] != "equal_steps",
        row["steps"],
        row["task"],
        row["demos"],
        VARIANTS.index(row["variant"]),
        modes.index(row["mode"]),
        row["delay"],
    )
