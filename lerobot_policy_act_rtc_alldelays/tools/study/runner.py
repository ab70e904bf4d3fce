"""Closed-loop evidence study in MetaWorld (state observations): does prefix conditioning and all-delays
training pay off when inference takes `d` control steps, and do the remedies against copying the prefix?

For every task and demonstration condition (unimodal: the scripted expert; multimodal: a random detour left
or right first; noisy: the expert's actions recorded but executed with noise, see `metaworld.state`), every
variant is trained on the same demonstrations, with the same seeds and batches, then evaluated in closed
loop (a longer budget trains on from the shorter one's model: the same batches, so the same model as
training from scratch). The variants are named config overrides (`variants.py`):

- `act`: LeRobot's ACT. Plain chunking: `discard` at every delay (the next chunk ignores the `d` actions
  still executing and its first `d` actions are dropped), and temporal ensembling at delay 0 as a reference.
- `off`, `on`, `shared`: this policy as it was before the state token and the prefix remedies, with one
  random delay per sample, all delays by batch expansion, or all delays under shared-observation attention.
- `state`: `on` with the robot-state token; `dropout`, `noise`, `k2`, `k3`: `state` with half of the
  prefixes masked, noise on the prefix, or 2 or 3 delays drawn per sample.
- `absolute`: the shipped defaults with `predict_relative_actions=false`; `blend`, `absolute_blend`,
  `delay0_weight`: the shipped defaults with blending at the join, with both, or with delay 0 weighted as
  all other delays together in the loss (probes of the joins).
- `default`: the package's shipped config defaults, whatever they are at run time.
- `act_smooth`: ACTSmooth, the peer plugin (the `peers` extra), on its committed prefix (`act_smooth`), at
  the study's learning rate; `act_smooth_tuned`: the same at its own learning rate (`variants`).

The RTC variants are evaluated in both `prefix` and `discard` mode (`rtc_inference_mode`). At delay 0 a new
chunk is requested only once the previous one is used up, so both modes run the same code and one
evaluation serves both rows. After training, every RTC model's prefix reliance is measured on its training
frames at each delay > 0 (`prefix_reliance`).

Training budgets, each row labelled with `budget` and its nominal `steps`:
- equal steps: every variant trains each of `--steps` (a budget scan when several are given);
- equal wall-clock: every variant trains for the time the reference variant (`--time-reference`; by default
  `off` if studied, else `default`) needs for `--time-steps` steps (default: the first of `--steps`). The time
  per step of each variant comes from ONE interleaved calibration run at the start (a few steps of each
  variant in turn, repeated; medians; a resumed study keeps its own), so a drifting load on a shared machine
  hits every variant alike; a variant's equal-time steps are `time_steps * t(reference) / t(variant)`. A
  variant whose equal-time steps equal one of its equal-steps runs reuses that run.

Evaluation runs through LeRobot's own `rollout` with a `SyncVectorEnv` of state envs: one batched policy call
per control step for all episodes of a cell. Episodes of all cells use the same env seeds (from `--eval-seed`,
never used for demonstrations: those start at 0); training seed `k` gets its own block of env seeds (the
`k`-th), and a cell pools the episodes of every training seed. Because all envs of a rollout reset together,
chunks start at the same steps in every env: every `n_action_steps` steps from step 0 (also under a delay, in
both modes), which is what the discontinuity measure uses.

Per cell: successes with a Wilson 95% interval, chunk-join discontinuity (mean jump at a chunk switch over the
mean step-to-step change inside chunks, per episode: mean, std and pooled), per-seed figures and a
seed-bootstrap interval; `summary.md` ends with the verdicts (`verdicts`). Actions are position targets by
default (`--actions position`; `--actions delta` runs MetaWorld's deltas, as `results/metaworld_state_study*`
did): see `metaworld.state`. The shipped defaults then predict relative actions; each row says so (`actions`,
`relative`).

Each unit (task, demos, variant, training seed, steps: a training and its evaluation) is saved in
`units/` when it finishes, with the settings it ran under and its policy config (`units`). Running the same
command again resumes: saved units are reused and only the missing ones run; a unit saved under other
settings stops the run, and one whose policy config is no longer what its variant resolves to (`default`
after a change of the package's defaults) or that lacks an evaluated setting is trained again.
Writes `summary.json` (a list of rows), `summary.md`, `prefix_reliance.json` (the diagnostic per cell),
`study_meta.json` and PNG plots to `--output-dir`; the summary is rewritten after every unit, so a partial
run is usable (`--report-only` rebuilds it from the units).
"""

import json
import multiprocessing
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.factory import make_env_pre_post_processors

from ..metaworld.state import record_demos
from ..policy_sizes import STATE_STUDY
from .act_smooth import is_act_smooth
from .data import TrainingData, demo_stats
from .evaluation import evaluate_model, make_vector_env
from .prefix_reliance import prefix_reliance
from .report import write_outputs
from .settings import DEMO_MAX_STEPS, StudySettings
from .training import Trainer, calibrate, equal_time_steps
from .units import (
    load_unit,
    planned_records,
    planned_units,
    refuse_other_settings,
    save_unit,
    stale_reason,
    write_json_atomically,
)
from .variants import DESCRIPTIONS, PEERS


def run_study(settings: StudySettings, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs the study, or resumes it: units already saved in the output folder under the same settings are
    reused, and a unit saved under other settings stops the run (`units`). Each unit is saved when it
    finishes and the summary is rewritten after it, so a partial run is usable. With `workers > 1` the tasks
    run in parallel processes (after the one shared calibration)."""
    settings.check()
    start = time.perf_counter()
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    refuse_other_settings(out, settings.unit_settings())
    meta = study_meta(settings)
    log(f"[{_minutes(start)}] calibration (ms/step): "
        f"{ {v: round(t * 1000, 1) for v, t in meta['seconds_per_step'].items()} }; equal wall-clock steps: "
        f"{meta['equal_time_steps']}")
    write_json_atomically(out / "study_meta.json", meta, indent=2)

    def update(status: str) -> list[dict[str, Any]]:
        meta["wall_clock_minutes"] = meta["earlier_runs_minutes"] + (time.perf_counter() - start) / 60
        meta["status"] = status
        episodes, diagnostics = planned_records(settings, meta["equal_time_steps"])
        if not episodes:
            return []
        # Plotting costs seconds: only the final summary draws the figures.
        return write_outputs(episodes, diagnostics, meta, out, figures=status == "complete")

    if settings.workers > 1 and len(settings.tasks) > 1:
        context = multiprocessing.get_context("spawn")  # fresh MuJoCo and torch state in each worker
        workers = min(settings.workers, len(settings.tasks))
        # The workers share the cores: each with its share of torch's threads, not all of them.
        threads = max(1, torch.get_num_threads() // workers)
        with context.Pool(workers, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            jobs = [
                pool.apply_async(run_task, (settings, task, meta["equal_time_steps"], start))
                for task in settings.tasks
            ]
            last_update = time.perf_counter()
            while not all(job.ready() for job in jobs):
                time.sleep(2)
                if time.perf_counter() - last_update > 60:
                    update("running")
                    last_update = time.perf_counter()
            for job in jobs:
                job.get()  # re-raises a worker's error
    else:
        for task in settings.tasks:
            run_task(settings, task, meta["equal_time_steps"], start, log, on_unit=lambda: update("running"))
    rows = update("complete")
    log(f"[{_minutes(start)}] done: {len(rows)} rows in {out}")
    return rows


def study_meta(settings: StudySettings) -> dict[str, Any]:
    """The study's metadata with its step-time calibration, for the equal wall-clock budget: the saved one
    when resuming a study whose calibration covers these variants (its equal wall-clock steps name the units
    to reuse), a new one otherwise."""
    meta: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "study_size": STATE_STUDY,
        "variants": {v: DESCRIPTIONS[v] for v in settings.variants},
        "python": platform.python_version(),
        "lerobot": _lerobot_version(),
        "torch_threads": torch.get_num_threads(),
        "status": "running",
        "time_reference": {"variant": settings.reference, "steps": settings.reference_steps},
    }
    saved_path = settings.output_dir / "study_meta.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    same_reference = bool(saved) and saved["time_reference"] == meta["time_reference"] and (
        StudySettings(**{**saved["settings"], "output_dir": settings.output_dir}).unit_settings()
        == settings.unit_settings()
    )
    # A resumed study's wall-clock adds this run's to the earlier runs' (each up to its last summary).
    meta["earlier_runs_minutes"] = meta["wall_clock_minutes"] = saved.get("wall_clock_minutes", 0.0)
    if not settings.equal_time:
        meta["seconds_per_step"] = {}  # only the equal wall-clock budget needs the step times
    elif same_reference and set(settings.variants) <= set(saved.get("seconds_per_step", {})):
        meta["seconds_per_step"] = {v: saved["seconds_per_step"][v] for v in settings.variants}
    else:
        first_task, first_demos = settings.tasks[0], settings.demos[0]
        demos = record_demos(first_task, settings.demo_episodes, first_demos, max_steps=DEMO_MAX_STEPS,
                             actions=settings.actions)
        meta["seconds_per_step"] = calibrate(settings, TrainingData(demo_stats(demos), demos))
    meta["equal_time_steps"] = (
        equal_time_steps(settings, meta["seconds_per_step"]) if settings.equal_time else {}
    )
    return meta


def run_task(
    settings: StudySettings,
    task: str,
    time_steps_by_variant: dict[str, int],
    start: float,
    log: Callable[[str], None] | None = None,
    on_unit: Callable[[], Any] | None = None,
) -> None:
    """Every unit of one task that is not saved yet: trains, evaluates and saves it."""
    log = log or print_now
    out, n_eval = settings.output_dir, settings.episodes_per_seed
    unit_settings = settings.unit_settings()
    vector_env = None
    try:
        for demos_condition in settings.demos:
            planned = planned_units(settings, task, demos_condition, time_steps_by_variant)
            to_run = []
            for unit, budgets in planned:
                saved = load_unit(out, unit)
                reason = None if saved is None else stale_reason(saved, unit, settings)
                if saved is None or reason is not None:
                    to_run.append((unit, budgets))
                if reason is not None:
                    log(f"[{_minutes(start)}] {task} {demos_condition} seed {unit.train_seed} {unit.variant} "
                        f"{unit.steps} steps: trained again, {reason}.")
            if not to_run:
                continue
            if vector_env is None:
                vector_env = make_vector_env(task, n_eval, settings.max_steps, settings.actions)
                env_processors = make_env_pre_post_processors(MetaworldEnvConfig(task=task), None)
            t0 = time.perf_counter()
            demos = record_demos(task, settings.demo_episodes, demos_condition, max_steps=DEMO_MAX_STEPS,
                                 actions=settings.actions)
            data = TrainingData(demo_stats(demos), demos)
            log(f"[{_minutes(start)}] {task} {demos_condition}: {len(demos)} demos "
                f"({sum(d.length for d in demos)} frames) in {time.perf_counter() - t0:.1f}s")
            trainer, trained = None, None  # the model of the last unit, which a longer unit continues
            for unit, budgets in to_run:
                seeds = [settings.eval_seed + unit.train_seed * n_eval + i for i in range(n_eval)]
                continues = trained == (unit.variant, unit.train_seed) and trainer.steps <= unit.steps
                if not continues:
                    trainer = Trainer(unit.variant, unit.train_seed, settings, data)
                # Training on from `trainer.steps` gives the model that training from scratch would: the
                # batches come from the trainer's own generator, and the evaluation below leaves the global
                # random state (dropout's) as it found it.
                trainer.train(unit.steps - trainer.steps)
                trained = (unit.variant, unit.train_seed)
                random_state = torch.get_rng_state()
                new = evaluate_model(trainer, data, vector_env, env_processors, seeds, settings)
                # The prefix-reliance diagnostic reads this policy's prefix inputs.
                diagnostics = [] if unit.variant in PEERS else diagnose(trainer, data, settings.delays)
                torch.set_rng_state(random_state)
                labels = dict(
                    actions=settings.actions,
                    relative=relative_label(trainer.config),
                    train_steps=unit.steps, train_seconds=trainer.seconds, train_loss=trainer.last_loss,
                )
                save_unit(out, unit, unit_settings, trainer.config_record,
                          {"labels": labels, "episodes": new, "diagnostics": diagnostics})
                reliance = " ".join(f"{d['delay']}: {d['prefix_reliance']:.2f}" for d in diagnostics)
                log(f"[{_minutes(start)}] {task} {demos_condition} seed {unit.train_seed} {unit.variant} "
                    f"{'+'.join(f'{b}@{s}' for b, s in budgets)}: {unit.steps} steps in "
                    f"{trainer.seconds:.1f}s (loss {trainer.last_loss:.3f}); successes "
                    f"{success_counts(new)}{'; prefix reliance ' + reliance if reliance else ''}")
                if on_unit is not None:
                    on_unit()
    finally:
        if vector_env is not None:
            vector_env.close()


def relative_label(config) -> bool | str:
    """The row's `relative`: whether this policy predicts actions relative to the state; for ACTSmooth,
    what it anchors them at."""
    if is_act_smooth(config):
        return "committed action" if config.use_action_relative else False
    return bool(getattr(config, "predict_relative_actions", False))


def diagnose(trainer: Trainer, data: TrainingData, delays: list[int]) -> list[dict[str, Any]]:
    """The trained RTC model's prefix reliance on its training frames, one record per delay > 0."""
    prefix_delays = [d for d in delays if d > 0]
    if not prefix_delays:
        return []
    by_delay = prefix_reliance(trainer.policy, trainer.windows, data.episode, prefix_delays)
    return [{"delay": delay, **figures} for delay, figures in by_delay.items()]


def success_counts(records: list[dict[str, Any]]) -> str:
    counts: dict[tuple[str, int], list[bool]] = {}
    for record in records:
        counts.setdefault((record["mode"], record["delay"]), []).append(record["success"])
    return " ".join(f"{mode} {delay}: {sum(v)}/{len(v)}," for (mode, delay), v in counts.items()).rstrip(",")


def print_now(message: str) -> None:
    print(message, flush=True)


def _minutes(start: float) -> str:
    return f"{(time.perf_counter() - start) / 60:5.1f} min"


def _lerobot_version() -> str:
    from importlib.metadata import version

    return version("lerobot")
