"""A study's verdicts, computed from its summary rows rather than read off by hand.

For each task and demo condition the judged budget is the smallest equal-steps budget at which LeRobot's ACT
reaches `ACT_MIN_DELAY_ZERO` at delay 0 (below that the comparison ranks nothing). There, at every delay, a
candidate (a variant in a mode) is "not worse" than a reference (LeRobot's ACT, or the same variant in the
other mode) when the reference's success rate lies inside or below the candidate's interval: Wilson's over
episodes, and the seed bootstrap's (`statistics.seed_bootstrap_interval`), both reported, so a verdict names
the interval it rests on. Its joins are "smoother" when its mean chunk-join discontinuity is below the
reference's, at every delay (at delay 0 chunks join every `n_action_steps` too); the ratio of the two is
reported beside it. A variant's mode against its other mode compares the same trained models, seed by seed:
a training seed "collapses" when the candidate gets fewer than half of the reference's successes on it (a
pooled interval can hide one seed failing every episode).
"""

from typing import Any

from ..report import markdown_table
from .settings import ACT_BLEND_MODE
from .statistics import not_worse
from .variants import ACT

ACT_MIN_DELAY_ZERO = 0.8
ACT_DISCARD = (ACT, "discard")  # LeRobot's ACT as it runs under a delay: plain chunking
ACT_BLEND = (ACT, ACT_BLEND_MODE)  # the same with this policy's default blending at the join


def judged_budgets(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int | None]:
    """Per (task, demos): the smallest equal-steps budget at which ACT (discard, delay 0) reaches
    `ACT_MIN_DELAY_ZERO`, or None when no budget does."""
    budgets: dict[tuple[str, str], int | None] = {}
    for row in sorted(rows, key=lambda r: r["steps"]):
        if row["budget"] != "equal_steps":
            continue
        key = (row["task"], row["demos"])
        budgets.setdefault(key, None)
        is_act_delay_zero = row["variant"] == ACT and row["mode"] == "discard" and row["delay"] == 0
        if is_act_delay_zero and budgets[key] is None and row["success_rate"] >= ACT_MIN_DELAY_ZERO:
            budgets[key] = row["steps"]
    return budgets


def verdict_rows(
    rows: list[dict[str, Any]], candidate: tuple[str, str], reference: tuple[str, str] = ACT_DISCARD
) -> list[dict[str, Any]]:
    """The candidate (variant, mode) against the reference at each delay that both ran, of each task and demo
    condition, at the judged budget."""
    index = {(r["budget"], r["steps"], r["task"], r["demos"], r["variant"], r["mode"], r["delay"]): r
             for r in rows}
    verdicts = []
    for (task, demos), steps in judged_budgets(rows).items():
        if steps is None:
            continue
        for delay in sorted({r["delay"] for r in rows if r["task"] == task}):
            if delay == 0 and candidate[0] == reference[0]:
                continue  # one variant's two modes at delay 0 are the same episodes
            cells = [index.get(("equal_steps", steps, task, demos, *side, delay))
                     for side in (candidate, reference)]
            if None in cells:
                continue
            candidate_row, reference_row = cells
            smoother = ratio = None
            discontinuities = (candidate_row["discontinuity_mean"], reference_row["discontinuity_mean"])
            if None not in discontinuities:
                smoother = discontinuities[0] < discontinuities[1]
                ratio = discontinuities[0] / discontinuities[1] if discontinuities[1] else None
            same_models = candidate[0] == reference[0]
            collapsed = collapsed_seeds(candidate_row, reference_row) if same_models else None
            verdicts.append({
                "task": task, "demos": demos, "steps": steps, "delay": delay,
                "candidate": candidate_row, "reference": reference_row,
                "not_worse_wilson": not_worse(candidate_row, reference_row, "wilson"),
                "not_worse_seed": not_worse(candidate_row, reference_row, "seed"),
                "smoother": smoother, "discontinuity_ratio": ratio, "collapsed_seeds": collapsed,
            })
    return verdicts


def collapsed_seeds(candidate: dict[str, Any], reference: dict[str, Any]) -> list[int]:
    """The training seeds on which the candidate row got fewer than half of the reference row's successes
    (two summary rows of the same trained models, each with `per_seed` counts)."""
    reference_successes = {s["train_seed"]: s["successes"] for s in reference["per_seed"]}
    return [
        s["train_seed"]
        for s in candidate["per_seed"]
        if 2 * s["successes"] < reference_successes.get(s["train_seed"], 0)
    ]


def verdicts_markdown(
    rows: list[dict[str, Any]], comparisons: list[tuple[tuple[str, str], tuple[str, str]]]
) -> str:
    """One table per (candidate, reference) of `comparisons`, and a count of the cells each verdict holds
    in."""
    budgets = judged_budgets(rows)
    lines = [
        "## Verdicts",
        "",
        f"At the smallest equal-steps budget where ACT reaches {ACT_MIN_DELAY_ZERO:.0%} at delay 0, per task "
        "and demo condition: "
        + "; ".join(f"{task} {demos}: {steps if steps else 'none (no verdict)'}"
                    for (task, demos), steps in budgets.items())
        + ". Not worse: the reference's rate inside or below the candidate's Wilson (episodes) or "
        "seed-bootstrap interval. Smoother: lower mean chunk-join discontinuity than the reference; ratio: "
        "the candidate's over the reference's.",
    ]
    for candidate, reference in comparisons:
        verdicts = verdict_rows(rows, candidate, reference)
        if not verdicts:
            continue
        per_seed = candidate[0] == reference[0]
        table = [
            [
                v["task"], v["demos"], v["steps"], v["delay"],
                f"{v['reference']['successes']}/{v['reference']['episodes']}",
                f"{v['candidate']['successes']}/{v['candidate']['episodes']}",
                _yes_no(v["not_worse_wilson"]), _yes_no(v["not_worse_seed"]),
                v["reference"]["discontinuity_mean"], v["candidate"]["discontinuity_mean"],
                _ratio(v["discontinuity_ratio"]), _yes_no(v["smoother"]),
                *([_seeds(v["collapsed_seeds"])] if per_seed else []),
            ]
            for v in verdicts
        ]
        joined = [v for v in verdicts if v["smoother"] is not None]
        within = sum(v["discontinuity_ratio"] is not None and v["discontinuity_ratio"] <= 1.1 for v in joined)
        lines += [
            "",
            f"### `{name(candidate)}` against `{name(reference)}`",
            "",
            markdown_table(
                ["task", "demos", "steps", "delay", name(reference), name(candidate), "not worse (Wilson)",
                 "not worse (seeds)", "reference discont.", "candidate discont.", "ratio", "smoother",
                 *(["seeds below half"] if per_seed else [])],
                table,
            ),
            "",
            f"Not worse in {sum(v['not_worse_wilson'] for v in verdicts)} of {len(verdicts)} cells (Wilson), "
            f"{sum(v['not_worse_seed'] for v in verdicts)} of {len(verdicts)} (seed bootstrap); smoother "
            f"joins in {sum(v['smoother'] for v in joined)} of {len(joined)} cells, no rougher than 1.1x the "
            f"reference in {within} of {len(joined)}"
            + (f"; a training seed below half of the reference's successes in "
               f"{sum(bool(v['collapsed_seeds']) for v in verdicts)} of {len(verdicts)} cells."
               if per_seed else "."),
        ]
    return "\n".join(lines) + "\n"


def name(side: tuple[str, str]) -> str:
    return f"{side[0]} {side[1]}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seeds(seeds: list[int]) -> str:
    return "none" if not seeds else "**" + " ".join(map(str, seeds)) + "**"


def _yes_no(value: bool | None) -> str:
    if value is None:
        return "-"
    return "yes" if value else "**no**"
