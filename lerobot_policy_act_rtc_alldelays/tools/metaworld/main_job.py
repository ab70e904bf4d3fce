"""The MetaWorld main job: LeRobot's ACT and this policy on a camera, and what an inference delay costs each.

1. Records `--episodes` successful expert episodes of `--task` at `--image-size` px (`metaworld.demos`),
   with actions in the `--actions` space: end-effector position targets by default, as a robot arm like the
   SO-101 is driven; `--actions delta` records MetaWorld's native deltas. Frames are rendered at the image
   size without shadows (`metaworld.frames`): at LeRobot's 480 px frames, rendering alone would take longer
   than the whole job.
   The default task is the one where the task scan (results/position_task_scan) found plain chunking losing
   most at the longest delay (LeRobot's ACT on state: 0.91 at delay 0, 0.76 at delay 8).
2. Trains LeRobot's ACT (`--policy.type=act`) and this policy with its shipped defaults (relative actions
   under position targets; absolute ones under deltas, which are not in the state's space) on that dataset
   with the real `lerobot-train` CLI, once per training seed (`--train-seeds`, lerobot-train's `--seed`;
   default: one): the same sizes (ResNet18 from scratch, no VAE, a small transformer), chunking, steps and
   batches. Any `--key=value` argument this script does not know goes to lerobot-train for both and
   replaces the default of the same key (e.g. `--steps=4000`); a `--policy.<field>` that LeRobot's ACT does
   not have goes to this policy only.
3. Evaluates every trained model through the delay sweep (`delay_sweep`), in the same env on the same
   episodes (the same env seeds for every policy, setting and training seed), at delays 0,
   rtc_max_delay / 2 and rtc_max_delay (or `--delays`), in the settings the study evaluates each policy in
   (`study.evaluation.eval_settings`, without ACT's temporal ensembling, which has no chunk joins):
   LeRobot's ACT with the delay emulated as the study emulates it, this policy in both inference modes, in
   those its checkpoint's config runs (one trained with `--policy.rtc_max_delay=0` has no prefix past delay
   0: those settings are left out with a line saying why). At delay 0 this policy's two modes run the same
   code (a chunk is requested only once the last is used up), so one evaluation serves both rows, as in the
   study.
4. Prints one table, a row per policy, mode and delay pooling the training seeds' episodes: successes with
   Wilson's 95% interval over the pooled episodes and, with two or more training seeds, the seed
   bootstrap's (`study.statistics.seed_bootstrap_interval`: seeds, then their episodes, resampled), each
   seed's successes, and the chunk-join discontinuity. Writes `summary.json` (its rows), `summary.md` and
   `summary.png` (success and discontinuity against delay, a line per policy and mode, a dot per training
   seed) to `--output-dir` (default: the work dir).

An interrupted job resumes, and a rerun reuses what still applies: the dataset if it was recorded under the
same settings (other settings are refused); each (policy, training seed)'s checkpoint if it was trained with
exactly the same lerobot-train arguments, recorded beside it (otherwise it is trained again from scratch,
with a line saying which arguments differ); each evaluated setting (`eval/`) if it was made of the same
checkpoint (weights and config) under the same evaluation settings. Delete the work dir to start over.
"""

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.train import TRAIN_CONFIG_NAME
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy

from ...modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from .. import report as report_writer
from ..arguments import add_delays_argument
from ..policy_sizes import SMALL, cli_args
from ..report import format_value, markdown_table
from ..study.evaluation import eval_settings
from ..study.settings import TEMPORAL_ENSEMBLE
from ..study.statistics import cell_rng_seed, seed_bootstrap_interval, wilson_interval
from ..study.units import write_json_atomically
from ..study.variants import ACT, DEFAULT
from .delay_sweep import DEFAULT_EVAL_SEED, run_sweep
from .demos import make_metaworld_dataset
from .position import ACTION_SPACES

MAIN_JOB_TASK = "handle-pull-v3"
POLICY_TYPES = (ACTPolicy.name, ACTRelativeRTCAllDelaysPolicy.name)
# Each policy as the study names it, for its evaluated settings (`eval_settings`).
STUDY_VARIANTS = {ACTPolicy.name: ACT, ACTRelativeRTCAllDelaysPolicy.name: DEFAULT}
ACT_FIELDS = {field.name for field in dataclasses.fields(ACTConfig)}

# Shared by both policies. The chunking is the study's, under which the task scan measured what a delay
# costs plain chunking. With 40 demos at 64 px and one training seed the whole job takes about 40 minutes on
# 2 idle CPU cores (a training step: 0.56 s for ACT, 0.75 s for this policy; a rendered evaluation step:
# 55 ms, two settings at once); each further seed adds its training and evaluation. Scale up with
# lerobot-train arguments.
TRAIN_DEFAULTS = {
    "--policy.device": "cpu",
    "--policy.push_to_hub": "false",
    **dict(arg.split("=", 1) for arg in cli_args(SMALL)),
    "--policy.chunk_size": "18",
    "--policy.n_action_steps": "9",
    "--policy.rtc_max_delay": "8",
    "--policy.optimizer_lr": "2e-4",
    "--policy.optimizer_lr_backbone": "2e-4",
    "--batch_size": "16",
    "--steps": "1200",
    "--log_freq": "100",
    "--num_workers": "0",
    "--wandb.enable": "false",
}
# Per action space, on top of TRAIN_DEFAULTS. Position targets keep this policy's default, relative actions
# (what users of a position-controlled arm get); MetaWorld's deltas are not in the state's space.
ACTION_SPACE_TRAIN_DEFAULTS = {
    "position": {},
    "delta": {"--policy.predict_relative_actions": "false"},
}
DEFAULT_TRAIN_SEEDS = (1000,)
# lerobot-train arguments the job sets itself, and the option of this script that sets them instead.
JOB_ARGUMENTS = {"--seed": "--train-seeds", "--output_dir": "--work-dir"}
# Paths that follow the work dir: a checkpoint's record leaves them out, so that a moved work dir still
# reuses its checkpoints (the dataset they name is checked on its own, by its recording settings).
WORK_DIR_ARGUMENTS = ("--dataset.root", "--output_dir")
TRAIN_RECORD = "lerobot_train_arguments.json"  # beside a checkpoint's `checkpoints/`


def applies_to_act(key: str) -> bool:
    """Whether the lerobot-train argument `key` is one LeRobot's ACT takes: anything but a `--policy.<field>`
    of this policy alone."""
    if not key.startswith("--policy."):
        return True
    field = key.removeprefix("--policy.").split(".")[0]
    return field == "type" or field in ACT_FIELDS


def parsed_overrides(overrides: list[str]) -> dict[str, str]:
    """The `--key=value` lerobot-train arguments passed to this script, by key; refuses any other form and
    the keys the job sets itself (`JOB_ARGUMENTS`)."""
    parsed = {}
    for override in overrides:
        key, separator, value = override.partition("=")
        if not key.startswith("--") or not separator:
            raise ValueError(f"Pass lerobot-train arguments as --key=value, got '{override}'.")
        if key in JOB_ARGUMENTS:
            raise ValueError(
                f"The main job sets {key} itself: pass {JOB_ARGUMENTS[key]} instead of '{override}'."
            )
        parsed[key] = value
    return parsed


def train_arguments(
    policy_type: str,
    dataset: LeRobotDataset,
    output_dir: Path,
    image_size: int,
    overrides: list[str],
    actions: str = "position",
    seed: int = DEFAULT_TRAIN_SEEDS[0],
) -> list[str]:
    """lerobot-train arguments for `policy_type` (`POLICY_TYPES`) and training `seed`: the defaults above for
    the `actions` space, then `--key=value` overrides replacing them by key; LeRobot's ACT gets only those
    it takes."""
    arguments = {
        **TRAIN_DEFAULTS,
        **ACTION_SPACE_TRAIN_DEFAULTS[actions],
        "--seed": str(seed),
        "--policy.type": policy_type,
        "--dataset.repo_id": dataset.meta.repo_id,
        "--dataset.root": str(dataset.meta.root),
        "--policy.downscale_img_square": str(image_size),  # the stored size: no second resize in training
        "--output_dir": str(output_dir),
    }
    arguments.update(parsed_overrides(overrides))
    arguments.setdefault("--save_freq", arguments["--steps"])
    if policy_type == ACTPolicy.name:
        arguments = {key: value for key, value in arguments.items() if applies_to_act(key)}
    return [f"{key}={value}" for key, value in arguments.items()]


def job_settings(policy_type: str, config: PreTrainedConfig, delays: list[int]) -> list[tuple[str, int]]:
    """The (mode, delay) pairs the job evaluates a `policy_type` checkpoint of `config` in: the study's
    (`eval_settings`) but ACT's temporal ensembling (no chunk joins, not a delay setting); of this policy's,
    those its config runs, printing why each other one is left out."""
    settings = [
        (mode, delay)
        for mode, delay in eval_settings(STUDY_VARIANTS[policy_type], delays)
        if mode != TEMPORAL_ENSEMBLE
    ]
    if policy_type == ACTPolicy.name:
        return settings
    runnable = []
    for mode, delay in settings:
        error = config.inference_setting_error(mode, delay)
        if error is None:
            runnable.append((mode, delay))
        else:
            print(f"      Leaving out {policy_type} in {mode} mode at delay {delay}: {error}", flush=True)
    return runnable


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """This script's arguments, and the `--key=value` arguments left for lerobot-train."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other --key=value arguments go to lerobot-train, for both policies (a --policy.<field> that "
        "LeRobot's ACT does not have: for this policy only), except --seed (use --train-seeds) and "
        "--output_dir (use --work-dir). A rerun reuses a checkpoint only when its lerobot-train arguments "
        "are the same; otherwise that policy and seed train again from scratch.",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/metaworld_main_job"))
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=list(DEFAULT_TRAIN_SEEDS),
        help="lerobot-train --seed of each training of each policy, e.g. 1000 1001 1002: the summary pools "
        "their episodes per row and adds the seed-bootstrap interval (with two or more); each seed adds its "
        f"training and evaluation to the job's time (default: {' '.join(map(str, DEFAULT_TRAIN_SEEDS))})",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="for summary.json, .md and .png (default: the work dir)"
    )
    parser.add_argument("--task", default=MAIN_JOB_TASK)
    parser.add_argument(
        "--actions",
        choices=ACTION_SPACES,
        default="position",
        help="position: end-effector targets, relative actions; delta: MetaWorld's deltas, absolute actions",
    )
    parser.add_argument("--episodes", type=int, default=40, help="expert episodes to record")
    parser.add_argument("--image-size", type=int, default=64, help="rendered and stored frame side (px)")
    parser.add_argument("--demo-seed", type=int, default=0)
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=20,
        help="episodes per (policy, training seed, mode, delay), the same env seeds for all",
    )
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    parser.add_argument("--eval-max-steps", type=int, default=150, help="the expert needs ~105")
    add_delays_argument(parser, None, "e.g. 0 8 (default: 0, rtc_max_delay / 2 and rtc_max_delay)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="settings evaluated at once, each in its own process (a frame renders on one core)",
    )
    args, overrides = parser.parse_known_args(argv)
    repeated = sorted({seed for seed in args.train_seeds if args.train_seeds.count(seed) > 1})
    if repeated:
        parser.error(f"--train-seeds lists {repeated} more than once: each seed trains once per policy.")
    try:
        parsed_overrides(overrides)
    except ValueError as error:
        parser.error(str(error))
    return args, overrides


def recorded_dataset(args: argparse.Namespace, stage: str) -> LeRobotDataset:
    """The work dir's dataset, recorded now or reused if it was recorded under the same settings."""
    root = args.work_dir / "data"
    settings_path = args.work_dir / "recording.json"
    settings = {
        "task": args.task,
        "actions": args.actions,
        "episodes": args.episodes,
        "image_size": args.image_size,
        "demo_seed": args.demo_seed,
    }
    if root.exists():
        # Training or evaluating another task's, size's or action space's data would run without an error
        # and mean nothing.
        saved = json.loads(settings_path.read_text()) if settings_path.exists() else None
        if saved != settings:
            recorded = saved or f"unknown settings (no {settings_path.name}: an interrupted recording?)"
            raise SystemExit(
                f"The dataset in {root} was recorded under {recorded}, not {settings}: pass the settings it "
                "was recorded with, another --work-dir, or delete the work dir."
            )
        print(f"{stage} Reusing the dataset in {root}")
        dataset = LeRobotDataset(f"local/metaworld_{args.task}", root=root)
    else:
        print(f"{stage} Recording {args.episodes} expert episodes of {args.task}, {args.actions} actions")
        dataset = make_metaworld_dataset(
            root,
            args.task,
            args.episodes,
            args.image_size,
            seed=args.demo_seed,
            actions=args.actions,
            frame_size=args.image_size,
        )
        write_json_atomically(settings_path, settings)
    print(f"      {dataset.meta.total_episodes} episodes, {dataset.meta.total_frames} frames", flush=True)
    return dataset


def recorded_arguments(arguments: list[str]) -> list[str]:
    """What a checkpoint's record keeps of the lerobot-train `arguments` it was trained with: all but the
    paths that follow the work dir (`WORK_DIR_ARGUMENTS`)."""
    return [argument for argument in arguments if argument.split("=", 1)[0] not in WORK_DIR_ARGUMENTS]


def retraining_reason(record: Path, arguments: list[str]) -> str | None:
    """Why the checkpoint beside `record` cannot serve the lerobot-train `arguments` (`recorded_arguments`):
    the arguments that differ from those it was trained with, or its lack of a record. None when they are
    identical: only then is it the model these arguments train."""
    if not record.exists():
        return (
            f"its checkpoint has no record of the arguments it was trained with ({record.name}: made by an "
            "older version of this job, or the job stopped before writing it)"
        )
    saved = dict(argument.split("=", 1) for argument in json.loads(record.read_text()))
    wanted = dict(argument.split("=", 1) for argument in arguments)
    unset = "not passed"
    differences = [
        f"{key} was {saved.get(key, unset)}, now {wanted.get(key, unset)}"
        for key in dict.fromkeys([*saved, *wanted])
        if saved.get(key) != wanted.get(key)
    ]
    return "; ".join(differences) or None


def trained_checkpoint(
    policy_type: str,
    seed: int,
    dataset: LeRobotDataset,
    args: argparse.Namespace,
    train_overrides: list[str],
    stage: str,
) -> Path:
    """`policy_type`'s last checkpoint for training `seed` in the work dir: reused if it was trained with
    exactly these lerobot-train arguments, else trained now from scratch, and its arguments recorded."""
    train_dir = args.work_dir / "train" / policy_type / f"seed{seed}"
    checkpoint = train_dir / "checkpoints" / "last" / "pretrained_model"
    record = train_dir / TRAIN_RECORD
    arguments = train_arguments(
        policy_type, dataset, train_dir, args.image_size, train_overrides, args.actions, seed
    )
    # lerobot-train refuses an existing output dir unless it resumes, and resuming would continue the old
    # run under its old arguments: a finished training is moved aside (the last one kept), an unfinished
    # one removed.
    if checkpoint.exists():
        reason = retraining_reason(record, recorded_arguments(arguments))
        if reason is None:
            print(f"{stage} Reusing the {policy_type} seed {seed} checkpoint {checkpoint}")
            return checkpoint
        previous = train_dir.with_name(f"{train_dir.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        train_dir.rename(previous)
        print(f"{stage} Retraining {policy_type} seed {seed} from scratch ({reason}); the earlier training "
              f"is kept in {previous}")
    elif train_dir.exists():
        print(f"{stage} {train_dir} holds an interrupted training: starting it over")
        shutil.rmtree(train_dir)
    command = [str(Path(sys.executable).parent / "lerobot-train"), *arguments]
    print(f"{stage} Training {policy_type} seed {seed}: " + " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    print(f"      trained in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    # Written once the checkpoint is complete: a record always describes a finished training.
    write_json_atomically(record, recorded_arguments(arguments), indent=1)
    return checkpoint


def note_unrecorded_checkpoint(policy_type: str, args: argparse.Namespace, stage: str) -> None:
    """Says that a checkpoint trained straight into `train/<policy>` (by a version of this job without
    training seeds) is not used: it has no record of its lerobot-train arguments, so nothing says which
    arguments it would serve. It is left where it is."""
    old_output = args.work_dir / "train" / policy_type
    if (old_output / "checkpoints").exists():
        print(
            f"{stage} Not using the {policy_type} checkpoint in {old_output / 'checkpoints'}: an older "
            "version of this job trained it without recording its lerobot-train arguments. Each training "
            f"seed trains into {old_output}/seed<k>; delete the old one to free its space."
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluated_setting(
    checkpoint: Path, mode: str, delay: int, args: argparse.Namespace, path: Path
) -> dict[str, Any]:
    """The delay sweep's report of one (mode, delay) of `checkpoint`, run now or reused from `path` if it was
    made of the same checkpoint under the same evaluation settings. The config counts beside the weights:
    inference-only fields (n_action_steps, blending) change what is evaluated, not what is trained."""
    settings = {
        "weights_sha256": file_sha256(checkpoint / "model.safetensors"),
        "config_sha256": file_sha256(checkpoint / "config.json"),
        "task": args.task,
        "actions": args.actions,
        "frame_size": args.image_size,
        "episodes": args.eval_episodes,
        "seed": args.eval_seed,
        "max_steps": args.eval_max_steps,
    }
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["settings"] == settings:
            return saved["report"]
    report = run_sweep(
        checkpoint,
        args.task,
        args.eval_episodes,
        args.eval_seed,
        args.eval_max_steps,
        modes=[mode],
        delays=[delay],
        actions=args.actions,
        frame_size=args.image_size,
    )
    write_json_atomically(path, {"settings": settings, "report": report}, indent=2)
    return report


def start_worker(threads: int, log_dir: Path) -> None:
    """An evaluation worker's setup: its share of torch's threads, and its output (progress bars, messages)
    to its own log file: on the terminal the workers' progress bars would garble each other."""
    torch.set_num_threads(threads)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{multiprocessing.current_process().name}.log"
    sys.stdout = sys.stderr = open(log, "w", buffering=1)


def evaluated_job(job: tuple[int, tuple]) -> tuple[int, dict[str, Any]]:
    """`evaluated_setting` of a numbered job, for a worker process."""
    index, arguments = job
    return index, evaluated_setting(*arguments)


def evaluated_settings(
    jobs: list[tuple], workers: int, log_dir: Path
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, report) of each job (`evaluated_setting`'s arguments) as it finishes, `workers` at a time,
    each worker logging to `log_dir`. Each frame renders on one core, so two settings at once take about as
    long as one on two cores."""
    context = multiprocessing.get_context("spawn")  # fresh MuJoCo and torch state in each worker
    # The workers share the cores: each with its share of torch's threads, not all of them.
    threads = max(1, torch.get_num_threads() // workers)
    with context.Pool(workers, initializer=start_worker, initargs=(threads, log_dir)) as pool:
        yield from pool.imap_unordered(evaluated_job, enumerate(jobs))


def pooled_discontinuity(results: list[dict[str, Any]]) -> float | None:
    """The chunk-join discontinuity of all joins of several sweep results (one setting, several training
    seeds), as the sweep's own over one: the mean jump at a switch over the mean change inside chunks, each
    mean weighted by its count (every step-to-step change of an episode is one or the other)."""
    switches = sum(r["n_switches"] for r in results)
    inside_counts = [sum(e["steps"] - 1 for e in r["episodes"]) - r["n_switches"] for r in results]
    inside_count = sum(inside_counts)
    if not switches or not inside_count:
        return None
    jump_mean = sum(r["switch_jump_mean"] * r["n_switches"] for r in results if r["n_switches"]) / switches
    inside_sum = sum(r["inside_change_mean"] * n for r, n in zip(results, inside_counts, strict=True) if n)
    return jump_mean / (inside_sum / inside_count) if inside_sum else None


def summary_row(
    policy_type: str, seed_reports: list[tuple[int, dict[str, Any]]], image_size: int, train_steps: int
) -> dict[str, Any]:
    """One row of the summary: the sweep reports of one (mode, delay) of `policy_type`, one per training
    seed (in `--train-seeds` order), pooled. Wilson's interval is over the pooled episodes; the seed
    bootstrap's over the seeds and their episodes, which needs two seeds or more (None with one)."""
    seeds = [seed for seed, _ in seed_reports]
    results = []
    for _, report in seed_reports:
        (result,) = report["results"]  # the sweep of one setting
        results.append(result)
    first = results[0]
    episodes = [episode for result in results for episode in result["episodes"]]
    n, successes = len(episodes), sum(r["successes"] for r in results)
    successes_per_seed = [r["successes"] for r in results]
    low, high = wilson_interval(successes, n)
    seed_low = seed_high = None
    if len(seeds) > 1:
        seed_low, seed_high = seed_bootstrap_interval(
            successes_per_seed,
            [r["n_episodes"] for r in results],
            cell_rng_seed((policy_type, first["mode"], first["delay"])),
        )
    ratios = [e["discontinuity"] for e in episodes if e["discontinuity"] is not None]
    report = seed_reports[0][1]  # the task, chunking and env seeds are the same for every training seed
    return {
        "policy": policy_type,
        "mode": first["mode"],
        "delay": first["delay"],
        "train_seeds": seeds,
        "episodes": n,
        "successes": successes,
        "successes_per_seed": successes_per_seed,
        "success_rate": successes / n,
        "ci95_low": low,
        "ci95_high": high,
        "seed_ci95_low": seed_low,
        "seed_ci95_high": seed_high,
        # As the study's rows: the mean over episodes of each episode's ratio, and the ratio of all joins.
        "discontinuity_mean": float(np.mean(ratios)) if ratios else None,
        "discontinuity_pooled": pooled_discontinuity(results),
        "n_switches": sum(r["n_switches"] for r in results),
        "mean_steps": float(np.mean([e["steps"] for e in episodes])),
        "task": report["task"],
        "actions": report["actions"],
        "image_size": image_size,
        "train_steps": train_steps,
        "chunk_size": report["chunk_size"],
        "n_action_steps": report["n_action_steps"],
        "rtc_max_delay": report["rtc_max_delay"],
        "eval_seeds": report["seeds"],
        "max_steps": report["max_steps"],
    }


def interval_text(low: float | None, high: float | None) -> str:
    return "-" if low is None else f"{low:.2f}-{high:.2f}"


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    seeds, env_seeds = first["train_seeds"], first["eval_seeds"]
    header = (
        f"`{first['task']}`, {first['actions']} actions, {first['image_size']} px camera, "
        f"{first['train_steps']} training steps per policy and training seed; chunk_size "
        f"{first['chunk_size']}, n_action_steps {first['n_action_steps']}. Training seeds "
        f"{', '.join(map(str, seeds))}, each evaluated on the same {len(env_seeds)} episodes per row (env "
        f"seeds {env_seeds[0]}..{env_seeds[-1]}, the same for every row, at most {first['max_steps']} "
        f"steps), pooled: {first['episodes']} episodes per row. Success: successes/episodes with Wilson's "
        "95% interval over the pooled episodes, and the seed bootstrap's 95% interval (training seeds, then "
        "their episodes, resampled; '-' with one training seed, which has no spread between seeds to "
        "resample); per seed: each training seed's successes. Discontinuity: mean over episodes of (mean "
        "action jump at a chunk switch / mean step-to-step change inside chunks); 1 = joins as smooth as the "
        "motion. Modes as the study evaluates each policy (discard: plain chunking; prefix: real-time "
        "chunking); at delay 0 both modes of this policy are the same episodes."
    )
    headers = [
        "policy",
        "mode",
        "delay",
        "success (Wilson 95%)",
        "seed bootstrap 95%",
        "per seed",
        "discontinuity",
        "switches",
        "mean steps",
    ]
    table = [
        [
            r["policy"],
            r["mode"],
            r["delay"],
            f"{r['successes']}/{r['episodes']} ({interval_text(r['ci95_low'], r['ci95_high'])})",
            interval_text(r["seed_ci95_low"], r["seed_ci95_high"]),
            " ".join(map(str, r["successes_per_seed"])),
            r["discontinuity_mean"],
            r["n_switches"],
            format_value(r["mean_steps"], 1),
        ]
        for r in rows
    ]
    return f"{header}\n\n{markdown_table(headers, table)}\n"


def draw_summary(rows: list[dict[str, Any]], plt):
    """Two panels against delay, a line per policy and mode: success rate with its Wilson interval and, with
    several training seeds, a dot per seed's own rate; and discontinuity."""
    from matplotlib.ticker import MaxNLocator

    figure, (success_axis, discontinuity_axis) = plt.subplots(1, 2, figsize=(11, 4))
    lines = list(dict.fromkeys((r["policy"], r["mode"]) for r in rows))
    seeds = rows[0]["train_seeds"]
    for index, (policy, mode) in enumerate(lines):
        line = [r for r in rows if (r["policy"], r["mode"]) == (policy, mode)]
        delays = [r["delay"] for r in line]
        rates = np.array([r["success_rate"] for r in line])
        # One array: matplotlib reads a list of arrays element by element, which NumPy deprecates.
        errors = np.array([rates - [r["ci95_low"] for r in line], [r["ci95_high"] for r in line] - rates])
        style = {"marker": "o", "label": f"{policy}, {mode}"}
        dodge = 0.1 * (index - (len(lines) - 1) / 2)  # side by side, so that equal intervals stay visible
        drawn = success_axis.errorbar(np.add(delays, dodge), rates, yerr=errors, capsize=3, **style)
        if len(seeds) > 1:
            for r in line:
                per_seed = np.array(r["successes_per_seed"]) / (r["episodes"] / len(seeds))
                x = np.full(len(per_seed), r["delay"] + dodge)
                color = drawn.lines[0].get_color()
                success_axis.scatter(x, per_seed, s=12, color=color, alpha=0.5, linewidths=0)
        discontinuity = [np.nan if r["discontinuity_mean"] is None else r["discontinuity_mean"] for r in line]
        discontinuity_axis.plot(delays, discontinuity, **style)
    success_label = "success rate (Wilson 95%" + ("; dots: each training seed)" if len(seeds) > 1 else ")")
    success_axis.set(xlabel="inference delay (steps)", ylabel=success_label, ylim=(-0.05, 1.05))
    discontinuity_axis.axhline(1.0, color="gray", linestyle=":", linewidth=1)
    discontinuity_axis.set(
        xlabel="inference delay (steps)", ylabel="jump at switch / change inside chunk", ylim=(0, None)
    )
    for axis, title in ((success_axis, "Success"), (discontinuity_axis, "Chunk-join discontinuity")):
        axis.set_title(title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # delays are whole control steps
        axis.legend()
        axis.grid(alpha=0.3)
    first = rows[0]
    figure.suptitle(
        f"{first['task']}, {first['image_size']} px camera, {first['train_steps']} training steps, "
        f"{len(seeds)} training seed(s): {first['episodes']} episodes per point"
    )
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    args, train_overrides = parse_arguments(argv)
    output_dir = args.work_dir if args.output_dir is None else args.output_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()

    dataset = recorded_dataset(args, "[1/4]")
    checkpoints = {}
    for stage, policy_type in enumerate(POLICY_TYPES, start=2):
        note_unrecorded_checkpoint(policy_type, args, f"[{stage}/4]")
        for seed in args.train_seeds:
            checkpoints[policy_type, seed] = trained_checkpoint(
                policy_type, seed, dataset, args, train_overrides, f"[{stage}/4]"
            )

    # Every seed of a policy trains under the same arguments: the first seed's config is theirs.
    configs = {
        policy_type: PreTrainedConfig.from_pretrained(checkpoints[policy_type, args.train_seeds[0]])
        for policy_type in POLICY_TYPES
    }
    rtc_max_delay = configs[POLICY_TYPES[1]].rtc_max_delay
    delays = args.delays if args.delays is not None else sorted({0, rtc_max_delay // 2, rtc_max_delay})
    settings = [
        (policy_type, mode, delay)
        for policy_type in POLICY_TYPES
        for mode, delay in job_settings(policy_type, configs[policy_type], delays)
    ]
    plan = [
        (policy_type, seed, mode, delay) for policy_type, mode, delay in settings for seed in args.train_seeds
    ]
    eval_dir = args.work_dir / "eval"
    print(
        f"[4/4] Evaluating {len(plan)} settings ({len(settings)} per training seed) at delays {delays}, "
        f"{args.eval_episodes} episodes each, {args.workers} at a time (their progress: {eval_dir / 'logs'})",
        flush=True,
    )
    jobs = [
        (
            checkpoints[policy_type, seed],
            mode,
            delay,
            args,
            eval_dir / policy_type / f"seed{seed}" / f"{mode}_delay{delay}.json",
        )
        for policy_type, seed, mode, delay in plan
    ]
    eval_started = time.monotonic()
    reports = {}
    finished_jobs = evaluated_settings(jobs, args.workers, eval_dir / "logs")
    for finished, (index, report) in enumerate(finished_jobs, start=1):
        policy_type, seed, mode, delay = plan[index]
        (result,) = report["results"]
        minutes = (time.monotonic() - eval_started) / 60
        print(
            f"      {finished}/{len(plan)} after {minutes:.1f} min: {policy_type} seed {seed}, {mode}, delay "
            f"{delay}: success {result['successes']}/{result['n_episodes']}, discontinuity "
            f"{format_value(result['discontinuity'])}",
            flush=True,
        )
        reports[plan[index]] = report

    rows = []
    for policy_type, mode, delay in settings:
        train_config = checkpoints[policy_type, args.train_seeds[0]] / TRAIN_CONFIG_NAME
        seed_reports = [(seed, reports[policy_type, seed, mode, delay]) for seed in args.train_seeds]
        row = summary_row(
            policy_type, seed_reports, args.image_size, json.loads(train_config.read_text())["steps"]
        )
        rows.append(row)
        if policy_type != ACTPolicy.name and delay == 0:  # the same code and episodes in both modes
            rows.append({**row, "mode": "discard", "same_episodes_as": "prefix, delay 0"})
    # Plain chunking first, the reference of every other mode; then the modes in the order the study lists.
    modes = list(dict.fromkeys(["discard", *(mode for _, mode, _ in settings)]))
    rows.sort(key=lambda r: (POLICY_TYPES.index(r["policy"]), modes.index(r["mode"]), r["delay"]))
    markdown = summary_markdown(rows)
    figures = {"summary": partial(draw_summary, rows)}
    report_writer.write_report(output_dir, "summary", rows, markdown, figures)
    print(markdown)
    minutes = (time.monotonic() - started) / 60
    print(f"Main job done in {minutes:.1f} min; summary.json, .md and .png in {output_dir}")


if __name__ == "__main__":
    main()
