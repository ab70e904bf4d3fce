"""A study's verdicts against LeRobot's ACT, computed from its summary rows rather than read off by hand.

For each task and demo condition the judged budget is the smallest equal-steps budget at which ACT reaches
`ACT_MIN_DELAY_ZERO` at delay 0 (below that the comparison ranks nothing). There, at every delay, a variant
in a mode is "not worse" than ACT when ACT's success rate lies inside or below the variant's interval:
Wilson's over episodes, and the seed bootstrap's (`statistics.seed_bootstrap_interval`), both reported, so a
verdict names the interval it rests on. Its joins are "smoother" when its mean chunk-join discontinuity is
below ACT's.
"""

from typing import Any

from ..report import markdown_table
from .statistics import not_worse
from .variants import ACT

ACT_MIN_DELAY_ZERO = 0.8


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


def verdict_rows(rows: list[dict[str, Any]], variant: str, mode: str) -> list[dict[str, Any]]:
    """`variant` in `mode` against ACT (discard) at each delay of each task and demo condition, at the judged
    budget."""
    index = {(r["budget"], r["steps"], r["task"], r["demos"], r["variant"], r["mode"], r["delay"]): r
             for r in rows}
    verdicts = []
    for (task, demos), steps in judged_budgets(rows).items():
        if steps is None:
            continue
        delays = sorted({r["delay"] for r in rows if r["task"] == task and r["variant"] == ACT})
        for delay in delays:
            act = index.get(("equal_steps", steps, task, demos, ACT, "discard", delay))
            candidate = index.get(("equal_steps", steps, task, demos, variant, mode, delay))
            if act is None or candidate is None:
                continue
            smoother = None
            if delay > 0 and None not in (act["discontinuity_mean"], candidate["discontinuity_mean"]):
                smoother = candidate["discontinuity_mean"] < act["discontinuity_mean"]
            verdicts.append({
                "task": task, "demos": demos, "steps": steps, "delay": delay,
                "variant": variant, "mode": mode,
                "act": act, "candidate": candidate,
                "not_worse_wilson": not_worse(candidate, act, "wilson"),
                "not_worse_seed": not_worse(candidate, act, "seed"),
                "smoother": smoother,
            })
    return verdicts


def verdicts_markdown(rows: list[dict[str, Any]], candidates: list[tuple[str, str]]) -> str:
    """One table per (variant, mode) of `candidates`, and a count of the cells each verdict holds in."""
    budgets = judged_budgets(rows)
    lines = [
        "## Verdicts against LeRobot's ACT",
        "",
        f"At the smallest equal-steps budget where ACT reaches {ACT_MIN_DELAY_ZERO:.0%} at delay 0, per task "
        "and demo condition: "
        + "; ".join(f"{task} {demos}: {steps if steps else 'none (no verdict)'}"
                    for (task, demos), steps in budgets.items())
        + ". Not worse: ACT's rate inside or below the candidate's Wilson (episodes) or seed-bootstrap "
        "interval. Smoother: lower mean chunk-join discontinuity than ACT (delays > 0).",
    ]
    for variant, mode in candidates:
        verdicts = verdict_rows(rows, variant, mode)
        if not verdicts:
            continue
        table = [
            [
                v["task"], v["demos"], v["steps"], v["delay"],
                f"{v['act']['successes']}/{v['act']['episodes']}",
                f"{v['candidate']['successes']}/{v['candidate']['episodes']}",
                _yes_no(v["not_worse_wilson"]), _yes_no(v["not_worse_seed"]),
                v["act"]["discontinuity_mean"], v["candidate"]["discontinuity_mean"], _yes_no(v["smoother"]),
            ]
            for v in verdicts
        ]
        delayed = [v for v in verdicts if v["delay"] > 0]
        lines += [
            "",
            f"### `{variant}` ({mode}) against ACT",
            "",
            markdown_table(
                ["task", "demos", "steps", "delay", "ACT", variant, "not worse (Wilson)", "not worse (seeds)",
                 "ACT discont.", f"{variant} discont.", "smoother"],
                table,
            ),
            "",
            f"Not worse in {sum(v['not_worse_wilson'] for v in verdicts)} of {len(verdicts)} cells (Wilson), "
            f"{sum(v['not_worse_seed'] for v in verdicts)} of {len(verdicts)} (seed bootstrap); smoother "
            f"joins in {sum(bool(v['smoother']) for v in delayed)} of {len(delayed)} delayed cells.",
        ]
    return "\n".join(lines) + "\n"


def _yes_no(value: bool | None) -> str:
    if value is None:
        return "-"
    return "yes" if value else "**no**"
