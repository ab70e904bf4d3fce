"""The study's outputs: summary.json and summary.md, prefix_reliance.json, the figures and study_meta.json,
from the episodes and diagnostics files."""

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..report import markdown_table, write_report
from .settings import TEMPORAL_ENSEMBLE, StudySettings
from .statistics import expand_delay_zero, summarize, summarize_diagnostics
from .units import UNITS_DIR, planned_records, write_json_atomically
from .variants import ACT
from .verdicts import ACT_BLEND, ACT_DISCARD, verdicts_markdown


def success_cell(row: dict[str, Any]) -> str:
    return f"{row['successes']}/{row['episodes']} ({row['ci95_low']:.2f}-{row['ci95_high']:.2f})"


def study_markdown(
    rows: list[dict[str, Any]], diagnostic_rows: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    lines = [
        f"# {meta['settings']['name']}",
        "",
        f"Command: `{meta['settings']['command']}`",
        "",
        f"Wall-clock: {meta.get('wall_clock_minutes', float('nan')):.1f} min ({meta.get('status', '')}; the "
        "runs that made it, added up). "
        f"Evaluation: {meta['evaluated_episodes']} episodes at "
        f"{meta['episodes_per_rollout_minute'] or float('nan'):.0f} episodes per minute of rollout. "
        + equal_time_sentence(meta),
        "",
        "Success: successes/episodes (Wilson 95% interval). Seed-bootstrap 95%: the percentile interval of a "
        "two-stage bootstrap that resamples the training seeds, then the episodes of each drawn seed, so "
        "that it also holds the spread between seeds that Wilson's interval (episodes as independent) leaves "
        "out; a verdict names which of the two intervals it rests on. Discontinuity: mean over episodes of "
        "(mean action jump at a chunk switch / mean step-to-step change inside chunks); 1 = joins as smooth "
        "as the motion. "
        "Per seed: successes per training seed.",
        "",
    ]
    headers = ["budget", "steps", "task", "demos", "actions", "variant", "relative", "mode", "delay",
               "success (95% CI)", "seed-bootstrap 95%", "discontinuity", "(std)", "per seed"]
    table = [
        [
            r["budget"], r["steps"], r["task"], r["demos"], r["actions"], r["variant"], r["relative"],
            r["mode"], r["delay"],
            success_cell(r), f"{r['seed_ci95_low']:.2f}-{r['seed_ci95_high']:.2f}", r["discontinuity_mean"],
            r["discontinuity_std"],
            " ".join(str(s["successes"]) for s in r["per_seed"]),
        ]
        for r in rows
    ]
    variants = dict.fromkeys(r["variant"] for r in rows if r["variant"] != ACT)
    modes = {v: {r["mode"] for r in rows if r["variant"] == v} for v in variants}
    # Every other variant in each of its modes against ACT's plain chunking and against ACT with the same
    # blending at the join (where the study ran it), and a prefix against the same variant's discard.
    act_modes = {r["mode"] for r in rows if r["variant"] == ACT}
    references = [ACT_DISCARD] + [ACT_BLEND] * (ACT_BLEND[1] in act_modes)
    comparisons = [((v, mode), reference) for reference in references for v in variants
                   for mode in ("discard", "prefix") if mode in modes[v]]
    comparisons += [((v, "prefix"), (v, "discard")) for v in variants if {"prefix", "discard"} <= modes[v]]
    tables = (markdown_table(headers, table) + "\n" + verdicts_markdown(rows, comparisons)
              + reliance_markdown(diagnostic_rows))
    return "\n".join(lines) + "\n" + tables


def equal_time_sentence(meta: dict[str, Any]) -> str:
    if not meta["seconds_per_step"]:
        return "No equal wall-clock budget."
    return (
        "Seconds per training step (interleaved calibration): "
        + ", ".join(f"{v} {t * 1000:.1f} ms" for v, t in meta["seconds_per_step"].items())
        + f". Equal wall-clock steps (the time of {time_reference(meta)}): "
        + ", ".join(f"{v} {s}" for v, s in meta["equal_time_steps"].items())
        + "."
    )


def reliance_markdown(diagnostic_rows: list[dict[str, Any]]) -> str:
    """The prefix-reliance table: one row per trained cell and delay."""
    if not diagnostic_rows:
        return ""
    lines = [
        "",
        "## Prefix reliance",
        "",
        "Mean absolute change of the predicted chunk (model space) on training frames when the prefix is "
        "swapped for another episode's, and when the observation is; reliance = prefix change / observation "
        "change (> 1: the chunk follows the prefix more than the observation). Means over training seeds; "
        "per seed: each seed's reliance.",
        "",
    ]
    headers = ["budget", "steps", "task", "demos", "variant", "delay", "prefix reliance", "prefix change",
               "observation change", "per seed"]
    table = [
        [
            r["budget"], r["steps"], r["task"], r["demos"], r["variant"], r["delay"],
            r["prefix_reliance_mean"], r["prefix_change_mean"], r["observation_change_mean"],
            " ".join(f"{s['prefix_reliance']:.2f}" for s in r["per_seed"]),
        ]
        for r in diagnostic_rows
    ]
    return "\n".join(lines) + "\n" + markdown_table(headers, table, digits=3) + "\n"


def time_reference(meta: dict[str, Any]) -> str:
    """'<variant> at <steps> steps'; a study from before `--time-reference` used `off` at its steps."""
    reference = meta.get("time_reference") or {"variant": "off", "steps": meta["settings"]["steps"]}
    return f"{reference['variant']} at {reference['steps']} steps"


def plot_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per budget and its steps: success and discontinuity vs delay, one panel column per (task,
    demos), one line per (variant, mode)."""
    figures = {}
    for budget, steps in dict.fromkeys((r["budget"], r["steps"]) for r in rows):
        subset = [r for r in rows if (r["budget"], r["steps"]) == (budget, steps)]
        groups = list(dict.fromkeys((r["task"], r["demos"]) for r in subset))

        def draw(plt, subset=subset, groups=groups, budget=budget, steps=steps):
            figure, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7), squeeze=False)
            for column, (task, demos) in enumerate(groups):
                cells = [r for r in subset if r["task"] == task and r["demos"] == demos]
                lines = list(dict.fromkeys((r["variant"], r["mode"]) for r in cells))
                all_delays = sorted({r["delay"] for r in cells})
                dodge = 0.015 * max(max(all_delays), 1)  # side by side, so that the error bars stay legible
                for index, (variant, mode) in enumerate(lines):
                    line = [r for r in cells if r["variant"] == variant and r["mode"] == mode]
                    delays = [r["delay"] + (index - (len(lines) - 1) / 2) * dodge for r in line]
                    label = f"{variant} {mode}"
                    style = dict(marker="o" if mode != "discard" else "x", linestyle="-" if mode == "prefix"
                                 else "--", label=label)
                    if mode == TEMPORAL_ENSEMBLE:
                        style.update(marker="*", linestyle="none", markersize=10)
                    rates = np.array([r["success_rate"] for r in line])
                    # Clipped at 0: at 0 or n successes the interval's edge equals the rate up to rounding.
                    errors = np.array([[r["success_rate"] - r["ci95_low"] for r in line],
                                       [r["ci95_high"] - r["success_rate"] for r in line]]).clip(min=0)
                    axes[0, column].errorbar(delays, rates, yerr=errors, capsize=2, **style)
                    axes[1, column].plot(
                        delays, [np.nan if r["discontinuity_mean"] is None else r["discontinuity_mean"]
                                 for r in line], **style)
                axes[0, column].set(title=f"{task}, {demos}", xlabel="delay (steps)", ylabel="success",
                                    ylim=(-0.05, 1.05), xticks=all_delays)
                axes[1, column].set(xlabel="delay (steps)", ylabel="discontinuity", ylim=(0, None),
                                    xticks=all_delays)
                axes[1, column].axhline(1.0, color="gray", linestyle=":", linewidth=1)
            axes[0, 0].legend(fontsize=7)
            figure.suptitle(f"{budget.replace('_', ' ')} ({steps} steps): success (Wilson 95%) and "
                            "chunk-join discontinuity")
            figure.tight_layout()
            return figure

        figures[f"{budget}_{steps}_steps_success_discontinuity"] = draw
    return figures


def write_outputs(
    episodes: list[dict[str, Any]],
    diagnostics: list[dict[str, Any]],
    meta: dict[str, Any],
    output_dir: Path,
    figures: bool = True,
) -> list[dict]:
    """summary.json (the rows), summary.md, prefix_reliance.json, study_meta.json and, with `figures`, the
    PNG plots."""
    rows = expand_delay_zero(summarize(episodes))
    diagnostic_rows = summarize_diagnostics(diagnostics)
    # A run that serves both budgets is listed under each: count its episodes once.
    run_keys = ("task", "demos", "variant", "train_seed", "train_steps", "mode", "delay", "seed")
    unique = {tuple(e[k] for k in run_keys): e for e in episodes}
    rollout_minutes = sum(e["rollout_seconds"] for e in unique.values()) / 60
    meta["evaluated_episodes"] = len(unique)
    meta["episodes_per_rollout_minute"] = len(unique) / rollout_minutes if rollout_minutes else None
    markdown = study_markdown(rows, diagnostic_rows, meta)
    write_report(output_dir, "summary", rows, markdown, plot_figures(rows) if figures else None)
    (output_dir / "prefix_reliance.json").write_text(json.dumps(diagnostic_rows, indent=2) + "\n")
    write_json_atomically(output_dir / "study_meta.json", meta, indent=2)
    return rows


def rewrite_report(output_dir: Path) -> list[dict[str, Any]]:
    """The summary and plots again, from a (possibly partial) run's units, or from the episodes and
    diagnostics files (plain, or gzipped for storage) of a study from before units, and its metadata.
    Episodes of a study from before the budget scan get its one step count as their budget's `steps`; those
    from before position targets ran MetaWorld's deltas without relative actions."""
    meta_path = output_dir / "study_meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"No study_meta.json in {output_dir}: point --output-dir at the outputs of a study."
        )
    meta = json.loads(meta_path.read_text())
    if (output_dir / UNITS_DIR).exists():
        settings = StudySettings(**{**meta["settings"], "output_dir": output_dir})
        episodes, diagnostics = planned_records(settings, meta["equal_time_steps"])
        return write_outputs(episodes, diagnostics, meta, output_dir)
    episodes, diagnostics = (read_records(output_dir, kind) for kind in ("episodes", "diagnostics"))
    for record in episodes + diagnostics:
        record.setdefault("actions", "delta")
        record.setdefault("relative", False)
    for episode in episodes:
        if "episode_steps" not in episode:  # the episode's length was `steps` before the budget scan
            episode["episode_steps"] = episode.pop("steps")
            episode["steps"] = meta["settings"]["steps"]
    return write_outputs(episodes, diagnostics, meta, output_dir)


def read_records(output_dir: Path, kind: str) -> list[dict[str, Any]]:
    """Every line of the `<kind>_<task>.jsonl` files, plain or gzipped."""
    paths = sorted(output_dir.glob(f"{kind}_*.jsonl")) + sorted(output_dir.glob(f"{kind}_*.jsonl.gz"))
    return [
        json.loads(line)
        for path in paths
        for line in (gzip.open(path, "rt") if path.suffix == ".gz" else path.open())
    ]
