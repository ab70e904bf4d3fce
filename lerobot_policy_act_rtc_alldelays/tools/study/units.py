"""A study's units, each saved when it finishes, so that a study resumes.

A unit is one training run (task, demos, variant, training seed, steps) and its evaluation: the episodes and
the prefix-reliance diagnostic of the trained model. Its file, `units/<task>/<demos>/<variant>/
seed<k>_steps<n>.json` in the output folder, also holds the settings it ran under
(`StudySettings.unit_settings`) and the policy config it trained with (`policy_config`). A unit is written to
a temporary file and renamed into place, so a run killed at any moment leaves whole units only: it loses at
most the unit in progress.

A saved unit is reused only while it is current: its policy config is the one its variant resolves to today
(`default` follows the package's defaults, which change between releases; a field added since it was saved
counts at the value that does what the policy did before, `ADDED_FIELDS`) and it evaluated the settings the
variant is evaluated in today. Otherwise it is trained and evaluated again.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..interleave import rotated
from .evaluation import eval_settings
from .settings import StudySettings
from .training import Budget, config_record, policy_config, training_runs

UNITS_DIR = "units"
# Config fields added since units record their policy config, each with the value that does what the policy
# did before the field existed: a unit recorded without the field ran under that value.
ADDED_FIELDS = {"relative_anchor": "state", "rtc_prefix_self_condition": 0.0}


@dataclass(frozen=True)
class Unit:
    task: str
    demos: str
    variant: str
    train_seed: int
    steps: int

    def path(self, output_dir: Path) -> Path:
        return (
            output_dir / UNITS_DIR / self.task / self.demos / self.variant
            / f"seed{self.train_seed}_steps{self.steps}.json"
        )


def write_json_atomically(path: Path, value: Any, indent: int | None = None) -> None:
    """Writes `value` to `path` through a temporary file renamed into place: a reader (a resumed run)
    never finds a half-written file, whenever the writer is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".partial")
    temporary.write_text(json.dumps(value, indent=indent, default=str) + "\n")
    os.replace(temporary, path)


def save_unit(
    output_dir: Path, unit: Unit, settings: dict[str, Any], config: dict[str, Any], result: dict[str, Any]
) -> None:
    """Writes the unit's `result` with the `settings` it ran under and its policy `config` (`config_record`),
    atomically."""
    write_json_atomically(
        unit.path(output_dir), {"unit": vars(unit), "settings": settings, "policy_config": config, **result}
    )


def load_unit(output_dir: Path, unit: Unit) -> dict[str, Any] | None:
    """The saved result of `unit`, or None if it has not finished."""
    path = unit.path(output_dir)
    return json.loads(path.read_text()) if path.exists() else None


def stale_reason(saved: dict[str, Any], unit: Unit, settings: StudySettings) -> str | None:
    """Why the saved result of `unit` cannot be reused under today's variant, or None when it can."""
    recorded = saved.get("policy_config")
    if recorded is None:
        return "it records no policy config (saved by an earlier version)"
    today = config_record(policy_config(unit.variant, settings))
    recorded = {**{k: v for k, v in ADDED_FIELDS.items() if k in today}, **recorded}
    changed = sorted(key for key in set(recorded) | set(today) if recorded.get(key) != today.get(key))
    if changed:
        return "its policy config differs from the variant's today in " + ", ".join(
            f"{key} ({recorded.get(key)!r} there, {today.get(key)!r} now)" for key in changed
        )
    evaluated = {(e["mode"], e["delay"]) for e in saved["episodes"]}
    missing = sorted(set(eval_settings(unit.variant, settings.delays)) - evaluated)
    if missing:
        return f"it lacks the evaluated settings {missing}"
    return None


def current_unit(output_dir: Path, unit: Unit, settings: StudySettings) -> dict[str, Any] | None:
    """The saved result of `unit` if it finished and is current (`stale_reason`), else None."""
    saved = load_unit(output_dir, unit)
    if saved is None or stale_reason(saved, unit, settings) is not None:
        return None
    return saved


def refuse_other_settings(output_dir: Path, settings: dict[str, Any]) -> None:
    """Raises if `output_dir` holds a study this run cannot extend: one from before units (its episodes
    files would be dropped from the summary), or a unit made under other settings (its results would not be
    comparable with the units this run adds)."""
    if any(output_dir.glob("episodes_*.jsonl*")) and not (output_dir / UNITS_DIR).exists():
        raise ValueError(
            f"{output_dir} holds a study saved as episodes files, without units, which this run cannot "
            "extend: its summary would be replaced by this run's. Choose another --output-dir for a new "
            "study."
        )
    for path in sorted((output_dir / UNITS_DIR).glob("**/*.json")):
        saved = json.loads(path.read_text())["settings"]
        if saved != settings:
            differences = {
                key: (saved.get(key), settings.get(key))
                for key in sorted(set(saved) | set(settings))
                if saved.get(key) != settings.get(key)
            }
            described = "; ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in
                                  differences.items())
            raise ValueError(
                f"{path} was made under other settings ({described}), so this run cannot resume the "
                f"study in {output_dir} without mixing incomparable results. Run with the settings of that "
                "study to resume it, or choose another --output-dir for a new study."
            )


def planned_units(
    settings: StudySettings, task: str, demos: str, time_steps_by_variant: dict[str, int]
) -> list[tuple[Unit, list[Budget]]]:
    """The units of one task and demo condition with the budgets each serves, in the order they run:
    seeds, then variants rotated per seed (so a drifting machine load spreads over all variants), then
    step counts ascending (a longer run continues the shorter one's training)."""
    planned = []
    for index, train_seed in enumerate(settings.train_seeds):
        for variant in rotated(list(settings.variants), index):
            for steps, budgets in training_runs(settings, time_steps_by_variant.get(variant)):
                planned.append((Unit(task, demos, variant, train_seed, steps), budgets))
    return planned


def planned_records(
    settings: StudySettings, time_steps_by_variant: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The episodes and diagnostics of every finished unit that these settings plan, each labelled once per
    budget that its model serves."""
    episodes: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    for task in settings.tasks:
        for demos in settings.demos:
            for unit, budgets in planned_units(settings, task, demos, time_steps_by_variant):
                result = current_unit(settings.output_dir, unit, settings)
                if result is None:
                    continue
                for budget, steps in budgets:
                    labels = {**vars(unit), **result["labels"], "budget": budget, "steps": steps}
                    episodes += [{**e, **labels} for e in result["episodes"]]
                    diagnostics += [{**d, **labels} for d in result["diagnostics"]]
    return episodes, diagnostics
