"""The MetaWorld main job: expert demonstrations -> lerobot-train on CPU -> closed-loop delay sweep.

1. Records `--episodes` successful expert episodes of `--task` at `--image-size` px (`metaworld_demos`),
   with actions in the `--actions` space: end-effector position targets by default, as a robot arm like the
   SO-101 is driven; `--actions delta` records MetaWorld's native deltas.
2. Trains `act_relative_rtc_alldelays` with the real `lerobot-train` CLI, leaving the policy's default
   relative actions on (position targets are in the state's space: the policy predicts them relative to the
   measured hand and gripper); under `--actions delta`, absolute actions
   (`--policy.predict_relative_actions=false`: a delta is not in the state's space). ResNet18 from scratch,
   no VAE, a small transformer. Any `--key=value` argument this script does not know is passed on to
   lerobot-train and replaces the default of the same key (e.g. `--steps=4000 --policy.dim_model=256`).
3. Runs the delay sweep (`delay_sweep`) in the same action space at delays 0 and rtc_max_delay (or
   `--sweep-delays`) in both inference modes, and prints success and chunk-boundary discontinuity per
   setting.

Steps already done (a dataset, a last checkpoint) are reused, so an interrupted job resumes where it
stopped; delete the work dir to start over.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .delay_sweep import DEFAULT_EVAL_SEED, parse_delays, run_sweep, write_report
from .metaworld_demos import ACTION_NAMES, DEFAULT_TASK, make_metaworld_dataset
from .metaworld_position import ACTION_SPACES
from .policy_sizes import SMALL, cli_args

# The CPU study size; the README gives this job's measured time and results. Scale up with lerobot-train
# arguments.
TRAIN_DEFAULTS = {
    "--policy.type": "act_relative_rtc_alldelays",
    "--policy.device": "cpu",
    "--policy.push_to_hub": "false",
    **dict(arg.split("=", 1) for arg in cli_args(SMALL)),
    "--policy.chunk_size": "24",
    "--policy.n_action_steps": "12",
    "--policy.rtc_max_delay": "4",
    "--policy.optimizer_lr": "2e-4",
    "--policy.optimizer_lr_backbone": "2e-4",
    "--batch_size": "16",
    "--steps": "1200",
    "--log_freq": "100",
    "--num_workers": "0",
    "--wandb.enable": "false",
}
# Per action space, on top of TRAIN_DEFAULTS. Position targets keep the policy's default, relative actions
# (what users of a position-controlled arm get); MetaWorld's deltas are not in the state's space.
ACTION_SPACE_TRAIN_DEFAULTS = {
    "position": {},
    "delta": {"--policy.predict_relative_actions": "false"},
}


def train_arguments(
    dataset, output_dir: Path, image_size: int, overrides: list[str], actions: str = "position"
) -> list[str]:
    """lerobot-train arguments: the defaults above for the `actions` space, then `--key=value` overrides
    replacing them by key."""
    arguments = {
        **TRAIN_DEFAULTS,
        **ACTION_SPACE_TRAIN_DEFAULTS[actions],
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
    return [f"{key}={value}" for key, value in arguments.items()]


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """This script's arguments, and the `--key=value` arguments left for lerobot-train."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other --key=value arguments go to lerobot-train.",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/metaworld_main_job"))
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument(
        "--actions",
        choices=ACTION_SPACES,
        default="position",
        help="position: end-effector targets, relative actions; delta: MetaWorld's deltas, absolute actions",
    )
    parser.add_argument("--episodes", type=int, default=25, help="expert episodes to record")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--demo-seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per (mode, delay)")
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    parser.add_argument("--eval-max-steps", type=int, default=150, help="the expert needs ~65")
    parser.add_argument(
        "--sweep-delays", type=parse_delays, default=None, help="default: 0 and the policy's rtc_max_delay"
    )
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    args, train_overrides = parse_arguments(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()

    dataset_root = args.work_dir / "data"
    if (dataset_root / "meta" / "info.json").exists():
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        dataset = LeRobotDataset(f"local/metaworld_{args.task}", root=dataset_root)
        print(f"[1/3] Reusing the dataset in {dataset_root}")
        # A work dir recorded in the other action space: training or evaluating its actions as this one's
        # would run without error and mean nothing.
        names = dataset.meta.features["action"]["names"]
        if names != ACTION_NAMES[args.actions]:
            raise SystemExit(
                f"The dataset in {dataset_root} has actions {names}, not the {args.actions} actions "
                f"{ACTION_NAMES[args.actions]}: pass the --actions it was recorded in, or another --work-dir."
            )
    else:
        print(f"[1/3] Recording {args.episodes} expert episodes of {args.task}, {args.actions} actions")
        dataset = make_metaworld_dataset(
            dataset_root, args.task, args.episodes, args.image_size, seed=args.demo_seed, actions=args.actions
        )
    print(f"      {dataset.meta.total_episodes} episodes, {dataset.meta.total_frames} frames")

    train_dir = args.work_dir / "train"
    checkpoint = train_dir / "checkpoints" / "last" / "pretrained_model"
    if checkpoint.exists():
        print(f"[2/3] Reusing the checkpoint {checkpoint}")
    else:
        command = [
            str(Path(sys.executable).parent / "lerobot-train"),
            *train_arguments(dataset, train_dir, args.image_size, train_overrides, args.actions),
        ]
        print("[2/3] " + " ".join(command), flush=True)
        train_started = time.monotonic()
        subprocess.run(command, check=True)
        print(f"      trained in {(time.monotonic() - train_started) / 60:.1f} min")

    rtc_max_delay = json.loads((checkpoint / "config.json").read_text())["rtc_max_delay"]
    delays = args.sweep_delays if args.sweep_delays is not None else sorted({0, rtc_max_delay})
    print(
        f"[3/3] Delay sweep at delays {delays}, {args.eval_episodes} episodes each, {args.actions} actions",
        flush=True,
    )
    report = run_sweep(
        checkpoint,
        args.task,
        args.eval_episodes,
        args.eval_seed,
        args.eval_max_steps,
        delays=delays,
        actions=args.actions,
    )
    print(write_report(report, args.work_dir / "sweep"))
    minutes = (time.monotonic() - started) / 60
    print(f"Main job done in {minutes:.1f} min; results in {args.work_dir / 'sweep'}")


if __name__ == "__main__":
    main()
