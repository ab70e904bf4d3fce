"""Task scan: which MetaWorld tasks can a study rank policies on under position targets?

LeRobot's ACT alone, at delays 0 and 8, at two budgets, one training seed, on the MetaWorld tasks the project
may study (`SCAN_TASKS`: tasks with a scripted expert; the others are kept for independent checks) whose
expert succeeds.
A task qualifies for the study when ACT, at some budget, reaches `MIN_DELAY_ZERO` at delay 0 (so the
comparison ranks something) and loses success at delay 8, to `MAX_DELAYED` or less, at that budget (so a
delay costs it something). The study takes the `STUDY_TASKS` qualifying tasks where ACT loses most from
delay 0 to delay 8 at the smallest budget that qualifies. The scan is a study (`run_study`): it resumes like
one. Writes `task_scan.md` and `task_scan.json` beside the study's outputs.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..metaworld.state import record_demos
from ..report import markdown_table
from .runner import print_now, run_study
from .settings import DEMO_MAX_STEPS, StudySettings
from .units import write_json_atomically
from .variants import ACT

# Named one by one rather than as "all but some": the tasks kept for independent checks appear nowhere here.
SCAN_TASKS = (
    "assembly-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3",
    "door-unlock-v3", "drawer-close-v3", "faucet-close-v3", "faucet-open-v3", "hammer-v3", "hand-insert-v3",
    "handle-press-side-v3", "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "peg-insert-side-v3", "peg-unplug-side-v3", "pick-out-of-hole-v3", "pick-place-wall-v3",
    "plate-slide-back-side-v3", "plate-slide-back-v3", "plate-slide-side-v3", "plate-slide-v3",
    "push-back-v3", "push-wall-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3", "soccer-v3",
    "stick-pull-v3", "stick-push-v3", "sweep-v3", "window-close-v3", "window-open-v3",
)
MIN_DELAY_ZERO = 0.8
MAX_DELAYED = 0.9
STUDY_TASKS = 2


def scan_settings(output_dir: Path, tasks: list[str], command: str = "") -> StudySettings:
    return StudySettings(
        name="position_task_scan",
        tasks=tasks,
        demos=("unimodal",),
        variants=(ACT,),
        delays=(0, 8),
        train_seeds=(0,),
        steps=(600, 2000),
        equal_time=False,
        workers=2,
        output_dir=output_dir,
        command=command,
    )


def expert_results(settings: StudySettings, tasks: list[str]) -> dict[str, str | None]:
    """Per task, None if its scripted expert records the study's demonstrations under position targets,
    else why not. Saved in `experts.json`, so a resumed scan does not record them again."""
    path = settings.output_dir / "experts.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for task in tasks:
        if task in results:
            continue
        try:
            record_demos(task, settings.demo_episodes, "unimodal", max_steps=DEMO_MAX_STEPS,
                         actions=settings.actions)
            results[task] = None
        except RuntimeError as error:
            results[task] = str(error)
        write_json_atomically(path, results, indent=2)
    return results


def qualifying_budgets(rates: dict[tuple[int, int], float], budgets: list[int]) -> list[int]:
    """The budgets at which ACT's success rates `{(steps, delay): rate}` meet the rule."""
    qualifying = []
    for steps in budgets:
        at_zero, at_eight = rates[steps, 0], rates[steps, 8]
        if at_zero >= MIN_DELAY_ZERO and at_eight <= MAX_DELAYED and at_eight < at_zero:
            qualifying.append(steps)
    return qualifying


def scan_table(
    rows: list[dict[str, Any]], experts: dict[str, str | None], tasks: list[str], budgets: list[int]
) -> list[dict]:
    """One entry per task: ACT's discard success rate per (steps, delay) and the budgets that qualify."""
    entries = []
    for task in tasks:
        failure = experts[task]
        if failure is not None:
            entries.append({"task": task, "expert": failure, "rates": {}, "qualifies_at": []})
            continue
        rates = {
            (r["steps"], r["delay"]): r["success_rate"]
            for r in rows
            if r["task"] == task and r["mode"] == "discard" and r["budget"] == "equal_steps"
        }
        entries.append({
            "task": task,
            "expert": None,
            "rates": {f"{steps}@{delay}": rate for (steps, delay), rate in rates.items()},
            "qualifies_at": qualifying_budgets(rates, budgets),
        })
    return entries


def delay_loss(entry: dict) -> float:
    """ACT's loss from delay 0 to delay 8 at the smallest budget where the entry's task qualifies."""
    steps = min(entry["qualifies_at"])
    return entry["rates"][f"{steps}@0"] - entry["rates"][f"{steps}@8"]


def study_tasks(entries: list[dict]) -> list[str]:
    """The qualifying tasks where delay costs ACT most, `STUDY_TASKS` of them."""
    qualifying = sorted((e for e in entries if e["qualifies_at"]), key=delay_loss, reverse=True)
    return [e["task"] for e in qualifying[:STUDY_TASKS]]


def scan_markdown(entries: list[dict], settings: StudySettings) -> str:
    budgets = list(settings.steps)
    headers = ["task", *(f"{steps} steps, delay {d}" for steps in budgets for d in (0, 8)), "qualifies at"]
    table = []
    for entry in entries:
        if entry["expert"] is not None:
            table.append([entry["task"], *["expert fails"] * (2 * len(budgets)), ""])
            continue
        table.append([
            entry["task"],
            *(f"{entry['rates'][f'{steps}@{d}']:.2f}" for steps in budgets for d in (0, 8)),
            ", ".join(str(s) for s in entry["qualifies_at"]),
        ])
    qualifying = [e["task"] for e in entries if e["qualifies_at"]]
    return "\n".join([
        "# Task scan: LeRobot's ACT under position targets",
        "",
        f"Command: `{settings.command}`",
        "",
        f"ACT's success rate (discard, {settings.episodes_per_seed} episodes, training seed "
        f"{settings.train_seeds[0]}, {settings.demo_episodes} unimodal demos) at delays 0 and 8, on "
        "the tasks the project may study.",
        "",
        f"Rule: a task qualifies at a budget where ACT reaches >= {MIN_DELAY_ZERO:.0%} at delay 0 and "
        f"loses success at delay 8, to <= {MAX_DELAYED:.0%}. The study takes the {STUDY_TASKS} qualifying "
        "tasks with ACT's largest loss from delay 0 to delay 8 at the smallest budget where they qualify.",
        "",
        markdown_table(headers, table),
        "",
        f"Qualifying tasks: {', '.join(qualifying) if qualifying else 'none'}. The study's tasks: "
        f"{', '.join(study_tasks(entries)) if qualifying else 'none'}.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("results/position_task_scan"))
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="default: SCAN_TASKS, the MetaWorld tasks the project may study")
    parser.add_argument("--episodes-per-seed", type=int, default=None)
    args = parser.parse_args(argv)
    tasks = args.tasks or list(SCAN_TASKS)
    command = "act-rtc-alldelays-task-scan " + " ".join(sys.argv[1:] if argv is None else argv)
    settings = scan_settings(args.output_dir, tasks, command.strip())
    if args.episodes_per_seed is not None:
        settings = replace(settings, episodes_per_seed=args.episodes_per_seed)
    experts = expert_results(settings, tasks)
    succeeding = [task for task in tasks if experts[task] is None]
    rows = run_study(replace(settings, tasks=succeeding), log=print_now)
    entries = scan_table(rows, experts, tasks, list(settings.steps))
    (settings.output_dir / "task_scan.json").write_text(json.dumps(entries, indent=2) + "\n")
    (settings.output_dir / "task_scan.md").write_text(scan_markdown(entries, settings))
    print(scan_markdown(entries, settings))
