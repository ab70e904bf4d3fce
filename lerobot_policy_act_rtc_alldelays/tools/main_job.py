"""The MetaWorld main job: LeRobot's ACT and this policy on a camera, and what an inference delay costs each.

1. Records `--episodes` successful expert episodes of `--task` at `--image-size` px (`metaworld_demos`),
   with actions in the `--actions` space: end-effector position targets by default, as a robot arm like the
   SO-101 is driven; `--actions delta` records MetaWorld's native deltas. Frames are rendered at the image
   size without shadows (`metaworld_frames`): at LeRobot's 480 px frames, rendering alone would take longer
   than the whole job.
   The default task is the one where the task scan (results/position_task_scan) found plain chunking losing
   most at the longest delay (LeRobot's ACT on state: 0.91 at delay 0, 0.76 at delay 8).
2. Trains LeRobot's ACT (`--policy.type=act`) and this policy with its shipped defaults (relative actions
   under position targets; absolute ones under deltas, which are not in the state's space) on that dataset
   with the real `lerobot-train` CLI: the same sizes (ResNet18 from scratch, no VAE, a small transformer),
   chunking, steps, batches and seed. Any `--key=value` argument this script does not know goes to
   lerobot-train for both and replaces the default of the same key (e.g. `--steps=4000`); a
   `--policy.<field>` that LeRobot's ACT does not have goes to this policy only.
3. Evaluates both through the delay sweep (`delay_sweep`), in the same env on the same episodes, at delays
   0, rtc_max_delay / 2 and rtc_max_delay (or `--delays`): LeRobot's ACT with plain chunking, the delay
   emulated as the study emulates it (`DelayedChunking`); this policy in both inference modes. At delay 0
   both modes run the same code (a chunk is requested only once the last is used up), so one evaluation
   serves both rows, as in the study.
4. Prints one table (successes with Wilson's 95% interval and the chunk-join discontinuity, per policy, mode
   and delay) and writes `summary.json` (its rows), `summary.md` and `summary.png` (success and
   discontinuity against delay, a line per policy and mode) to `--output-dir` (default: the work dir).

An interrupted job resumes: the dataset, each policy's last checkpoint and each evaluated setting (`eval/`)
are reused when they were made under the same settings; delete the work dir to start over.
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
from lerobot.configs.train import TRAIN_CONFIG_NAME
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy

from ..modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from . import report as report_writer
from .delay_sweep import DEFAULT_EVAL_SEED, parse_delays, run_sweep
from .metaworld_demos import make_metaworld_dataset
from .metaworld_position import ACTION_SPACES
from .policy_sizes import SMALL, cli_args
from .report import format_value, markdown_table
from .study.evaluation import eval_settings
from .study.settings import TEMPORAL_ENSEMBLE
from .study.statistics import wilson_interval
from .study.units import write_json_atomically
from .study.variants import ACT, DEFAULT

MAIN_JOB_TASK = "handle-pull-v3"
POLICY_TYPES = (ACTPolicy.name, ACTRelativeRTCAllDelaysPolicy.name)
# Each policy as the study names it, for its evaluated settings (`eval_settings`).
STUDY_VARIANTS = {ACTPolicy.name: ACT, ACTRelativeRTCAllDelaysPolicy.name: DEFAULT}
ACT_FIELDS = {field.name for field in dataclasses.fields(ACTConfig)}

# Shared by both policies. The chunking is the study's, under which the task scan measured what a delay
# costs plain chunking. With 40 demos at 64 px the whole job takes about 40 minutes on 2 idle CPU cores
# (a training step: 0.56 s for ACT, 0.75 s for this policy; a rendered evaluation step: 55 ms, two
# settings at once). Scale up with lerobot-train arguments.
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
    "--seed": "1000",
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


def applies_to_act(key: str) -> bool:
    """Whether the lerobot-train argument `key` is one LeRobot's ACT takes: anything but a `--policy.<field>`
    of this policy alone."""
    if not key.startswith("--policy."):
        return True
    field = key.removeprefix("--policy.").split(".")[0]
    return field == "type" or field in ACT_FIELDS


def train_arguments(
    policy_type: str,
    dataset: LeRobotDataset,
    output_dir: Path,
    image_size: int,
    overrides: list[str],
    actions: str = "position",
) -> list[str]:
    """lerobot-train arguments for `policy_type` (`POLICY_TYPES`): the defaults above for the `actions`
    space, then `--key=value` overrides replacing them by key; LeRobot's ACT gets only those it takes."""
    arguments = {
        **TRAIN_DEFAULTS,
        **ACTION_SPACE_TRAIN_DEFAULTS[actions],
        "--policy.type": policy_type,
        "--dataset.repo_id": dataset.meta.repo_id,
        "--dataset.root": str(dataset.meta.root),
        "--policy.downscale_img_square": str(image_size),  # the stored size: no second resize in training
        "--output_dir": str(output_dir),
    }
    for override in overrides:
        key, separator, value = override.partition("=")
        if not key.startswith("--") or not separator:
            raise ValueError(f"Pass lerobot-train arguments as --key=value, got '{override}'.")
        arguments[key] = value
    arguments.setdefault("--save_freq", arguments["--steps"])
    if policy_type == ACTPolicy.name:
        arguments = {key: value for key, value in arguments.items() if applies_to_act(key)}
    return [f"{key}={value}" for key, value in arguments.items()]


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """This script's arguments, and the `--key=value` arguments left for lerobot-train."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other --key=value arguments go to lerobot-train, for both policies (a --policy.<field> that "
        "LeRobot's ACT does not have: for this policy only).",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/metaworld_main_job"))
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
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per (policy, mode, delay)")
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    parser.add_argument("--eval-max-steps", type=int, default=150, help="the expert needs ~105")
    parser.add_argument(
        "--delays",
        type=parse_delays,
        default=None,
        help="comma-separated, e.g. 0,8 (default: 0, rtc_max_delay / 2 and rtc_max_delay)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="settings evaluated at once, each in its own process (a frame renders on one core)",
    )
    return parser.parse_known_args(argv)


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


def trained_checkpoint(
    policy_type: str,
    dataset: LeRobotDataset,
    args: argparse.Namespace,
    train_overrides: list[str],
    stage: str,
) -> Path:
    """`policy_type`'s last checkpoint in the work dir, trained now by lerobot-train or reused."""
    train_dir = args.work_dir / "train" / policy_type
    checkpoint = train_dir / "checkpoints" / "last" / "pretrained_model"
    if checkpoint.exists():
        print(f"{stage} Reusing the {policy_type} checkpoint {checkpoint}")
        return checkpoint
    if train_dir.exists():
        # A training stopped before its only checkpoint; lerobot-train refuses an existing output dir.
        print(f"{stage} {train_dir} holds an interrupted training: starting it over")
        shutil.rmtree(train_dir)
    command = [
        str(Path(sys.executable).parent / "lerobot-train"),
        *train_arguments(policy_type, dataset, train_dir, args.image_size, train_overrides, args.actions),
    ]
    print(f"{stage} Training {policy_type}: " + " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    print(f"      trained in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return checkpoint


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
    made with the same weights and evaluation settings."""
    settings = {
        "weights_sha256": file_sha256(checkpoint / "model.safetensors"),
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


def summary_row(
    policy_type: str, report: dict[str, Any], image_size: int, train_steps: int
) -> dict[str, Any]:
    """One row of the summary from a sweep report of one setting."""
    (result,) = report["results"]
    n, successes = result["n_episodes"], result["successes"]
    low, high = wilson_interval(successes, n)
    ratios = [e["discontinuity"] for e in result["episodes"] if e["discontinuity"] is not None]
    return {
        "policy": policy_type,
        "mode": result["mode"],
        "delay": result["delay"],
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n,
        "ci95_low": low,
        "ci95_high": high,
        # As the study's rows: the mean over episodes of each episode's ratio, and the ratio of all joins.
        "discontinuity_mean": float(np.mean(ratios)) if ratios else None,
        "discontinuity_pooled": result["discontinuity"],
        "n_switches": result["n_switches"],
        "mean_steps": result["mean_steps"],
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


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    header = (
        f"`{first['task']}`, {first['actions']} actions, {first['image_size']} px camera, "
        f"{first['train_steps']} training steps per policy; chunk_size {first['chunk_size']}, n_action_steps "
        f"{first['n_action_steps']}; {first['episodes']} episodes per row (env seeds "
        f"{first['eval_seeds'][0]}..{first['eval_seeds'][-1]}, the same for every row, at most "
        f"{first['max_steps']} steps). Success: successes/episodes (Wilson 95% interval). Discontinuity: "
        "mean over episodes of (mean action jump at a chunk switch / mean step-to-step change inside "
        "chunks); 1 = joins as smooth as the motion. LeRobot's ACT runs plain chunking (discard); at delay 0 "
        "both modes of this policy are the same episodes."
    )
    headers = ["policy", "mode", "delay", "success (95% CI)", "discontinuity", "switches", "mean steps"]
    table = [
        [
            r["policy"],
            r["mode"],
            r["delay"],
            f"{r['successes']}/{r['episodes']} ({r['ci95_low']:.2f}-{r['ci95_high']:.2f})",
            r["discontinuity_mean"],
            r["n_switches"],
            format_value(r["mean_steps"], 1),
        ]
        for r in rows
    ]
    return f"{header}\n\n{markdown_table(headers, table)}\n"


def draw_summary(rows: list[dict[str, Any]], plt):
    """Two panels, success rate (with its Wilson interval) and discontinuity against delay, a line per policy
    and mode."""
    from matplotlib.ticker import MaxNLocator

    figure, (success_axis, discontinuity_axis) = plt.subplots(1, 2, figsize=(11, 4))
    lines = list(dict.fromkeys((r["policy"], r["mode"]) for r in rows))
    for index, (policy, mode) in enumerate(lines):
        line = [r for r in rows if (r["policy"], r["mode"]) == (policy, mode)]
        delays = [r["delay"] for r in line]
        rates = np.array([r["success_rate"] for r in line])
        errors = [rates - [r["ci95_low"] for r in line], [r["ci95_high"] for r in line] - rates]
        style = {"marker": "o", "label": f"{policy}, {mode}"}
        dodge = 0.1 * (index - (len(lines) - 1) / 2)  # side by side, so that equal intervals stay visible
        success_axis.errorbar(np.add(delays, dodge), rates, yerr=errors, capsize=3, **style)
        discontinuity = [np.nan if r["discontinuity_mean"] is None else r["discontinuity_mean"] for r in line]
        discontinuity_axis.plot(delays, discontinuity, **style)
    success_axis.set(xlabel="inference delay (steps)", ylabel="success rate (Wilson 95%)", ylim=(-0.05, 1.05))
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
        f"{first['task']}, {first['image_size']} px camera, {first['train_steps']} training steps: "
        f"{first['episodes']} episodes per point"
    )
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    args, train_overrides = parse_arguments(argv)
    output_dir = args.work_dir if args.output_dir is None else args.output_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()

    dataset = recorded_dataset(args, "[1/4]")
    checkpoints = {
        policy_type: trained_checkpoint(policy_type, dataset, args, train_overrides, f"[{stage}/4]")
        for stage, policy_type in enumerate(POLICY_TYPES, start=2)
    }

    rtc_max_delay = json.loads((checkpoints[POLICY_TYPES[1]] / "config.json").read_text())["rtc_max_delay"]
    delays = args.delays if args.delays is not None else sorted({0, rtc_max_delay // 2, rtc_max_delay})
    plan = [
        (policy_type, mode, delay)
        for policy_type in POLICY_TYPES
        for mode, delay in eval_settings(STUDY_VARIANTS[policy_type], delays)
        if mode != TEMPORAL_ENSEMBLE  # ACT's reference without chunk joins, not a delay setting
    ]
    eval_dir = args.work_dir / "eval"
    print(
        f"[4/4] Evaluating {len(plan)} settings at delays {delays}, {args.eval_episodes} episodes each, "
        f"{args.workers} at a time (their progress: {eval_dir / 'logs'})",
        flush=True,
    )
    jobs = [
        (checkpoints[policy_type], mode, delay, args, eval_dir / policy_type / f"{mode}_delay{delay}.json")
        for policy_type, mode, delay in plan
    ]
    eval_started = time.monotonic()
    rows = []
    finished_jobs = evaluated_settings(jobs, args.workers, eval_dir / "logs")
    for finished, (index, report) in enumerate(finished_jobs, start=1):
        policy_type = plan[index][0]
        train_config = json.loads((checkpoints[policy_type] / TRAIN_CONFIG_NAME).read_text())
        row = summary_row(policy_type, report, args.image_size, train_config["steps"])
        minutes = (time.monotonic() - eval_started) / 60
        print(
            f"      {finished}/{len(plan)} after {minutes:.1f} min: {policy_type}, {row['mode']}, delay "
            f"{row['delay']}: success {row['successes']}/{row['episodes']}, discontinuity "
            f"{format_value(row['discontinuity_mean'])}",
            flush=True,
        )
        rows.append(row)
        if policy_type != ACTPolicy.name and row["delay"] == 0:  # the same code and episodes in both modes
            rows.append({**row, "mode": "discard", "same_episodes_as": "prefix, delay 0"})

    rows.sort(key=lambda r: (POLICY_TYPES.index(r["policy"]), r["mode"] != "discard", r["delay"]))
    markdown = summary_markdown(rows)
    figures = {"summary": partial(draw_summary, rows)}
    report_writer.write_report(output_dir, "summary", rows, markdown, figures)
    print(markdown)
    minutes = (time.monotonic() - started) / 60
    print(f"Main job done in {minutes:.1f} min; summary.json, .md and .png in {output_dir}")


if __name__ == "__main__":
    main()
