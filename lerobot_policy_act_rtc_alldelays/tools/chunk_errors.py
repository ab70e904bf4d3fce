"""Chunk error per step: how well a checkpoint predicts each step of its chunk on a LeRobot dataset.

For a checkpoint of this policy or of LeRobot's ACT and a dataset with its features (best: episodes it was
not trained on), each frame's chunk is predicted from the frame's observation, as a rollout asks for it,
and compared with the dataset's own actions at the same steps, in the robot's units (after the
checkpoint's postprocessor). This policy is asked at each delay in `--delays`, with the dataset's next
`delay` actions as the prefix (what training gives it), and with `relative_anchor=last_action` the
dataset's action before the frame as the last commanded one; its chunk then starts `delay` steps after the
frame. LeRobot's ACT has no delay: its chunk always starts at the frame.

Errors are reported per offset (steps after the frame), so that what a delayed rollout executes can be
compared between policies and modes: at delay d, plain chunking (discard) executes offsets
d..d+n_action_steps-1 of the delay-0 chunk; prefix mode executes the same offsets from the delay-d chunk.
The error of a step is the mean absolute difference over the action's coordinates; padded steps past an
episode's end are left out.

    python -m lerobot_policy_act_rtc_alldelays.tools.chunk_errors CHECKPOINT [CHECKPOINT ...] \\
        --dataset-repo-id local/my_heldout --dataset-root path/to/it --delays 0,8

writes `chunk_errors.json` (per checkpoint and delay, the error at every offset) and `chunk_errors.md`
(the mean over the offsets each delay in `--delays` executes) to `--output-dir`.
"""

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from torch.utils.data import DataLoader

from ..relative_actions import ACTION_IS_PAD
from . import report as report_writer
from .arguments import add_delays_argument
from .report import markdown_table

BATCH_SIZE = 64


def checkpoint_delays(policy: PreTrainedPolicy, delays: Sequence[int]) -> list[int]:
    """The delays `policy` is asked at: LeRobot's ACT has none but 0; this policy trains 0..rtc_max_delay."""
    if isinstance(policy, ACTPolicy):
        return [0]
    outside = [delay for delay in delays if not 0 <= delay <= policy.config.rtc_max_delay]
    if outside:
        raise ValueError(
            f"Delays {outside} are outside the checkpoint's trained 0..rtc_max_delay "
            f"({policy.config.rtc_max_delay}): pass --delays within it."
        )
    return list(delays)


def load_checkpoint(checkpoint: str | Path) -> tuple[PreTrainedPolicy, Callable, Callable]:
    """The policy of a `pretrained_model` folder (this policy's or LeRobot's ACT's), on the CPU, with its
    pre- and postprocessor."""
    config = PreTrainedConfig.from_pretrained(checkpoint)
    config.device = "cpu"
    policy = get_policy_class(config.type).from_pretrained(checkpoint, config=config).eval()
    preprocessor, postprocessor = make_pre_post_processors(policy_cfg=config, pretrained_path=str(checkpoint))
    return policy, preprocessor, postprocessor


def action_windows(repo_id: str, root: str | Path | None, length: int) -> LeRobotDataset:
    """The dataset with each frame's action before it and next `length` actions (`ACTION` [1 + length, A]
    and `ACTION_IS_PAD`; the action before an episode's first frame is padding)."""
    fps = LeRobotDatasetMetadata(repo_id, root=root).fps
    offsets = range(-1, length)
    return LeRobotDataset(repo_id, root=root, delta_timestamps={ACTION: [i / fps for i in offsets]})


@torch.no_grad()
def chunk_errors(
    policy: PreTrainedPolicy,
    preprocessor: Callable,
    postprocessor: Callable,
    dataset: LeRobotDataset,
    delays: Sequence[int],
) -> dict[int, list[float | None]]:
    """{delay: mean absolute error at each offset 0..W-1, None where no frame has a real action there} of
    `policy` on every frame of `dataset`, whose action windows (`action_windows`) are W >= max(delays) +
    chunk_size long."""
    delays = checkpoint_delays(policy, delays)
    chunk_size = policy.config.chunk_size
    length = len(dataset.delta_timestamps[ACTION]) - 1  # the action before the frame, then W after it
    if length < max(delays) + chunk_size:
        raise ValueError(
            f"The dataset's action windows hold {length} actions after the frame; delay {max(delays)} with "
            f"chunk_size {chunk_size} needs {max(delays) + chunk_size}: build it with action_windows()."
        )
    anchored = getattr(policy.config, "anchors_on_last_action", False)
    error_sums = {delay: torch.zeros(length, dtype=torch.float64) for delay in delays}
    counts = {delay: torch.zeros(length, dtype=torch.float64) for delay in delays}
    for batch in DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False):
        actions, real = batch[ACTION][:, 1:], ~batch[ACTION_IS_PAD][:, 1:]  # [B, W, A], [B, W]
        inputs = preprocessor(batch)
        # this policy's `last_action`: the action before the frame, the state where there is none
        last = {}
        if anchored:
            before_is_pad = batch[ACTION_IS_PAD][:, :1].to(inputs[OBS_STATE].device)
            last = {"last_action": torch.where(before_is_pad, inputs[OBS_STATE], inputs[ACTION][:, 0])}
        for delay in delays:
            if delay == 0:
                predicted = policy.predict_action_chunk(inputs, **last)
            else:
                prefix = inputs[ACTION][:, 1 : 1 + delay]
                predicted = policy.predict_action_chunk(inputs, delay=delay, action_prefix=prefix, **last)
            predicted = postprocessor(predicted).to(actions)  # [B, chunk, A] in the dataset's units
            steps = slice(delay, delay + chunk_size)
            error = (predicted - actions[:, steps]).abs().mean(-1)  # [B, chunk]
            error_sums[delay][steps] += (error * real[:, steps]).sum(0).double()
            counts[delay][steps] += real[:, steps].sum(0).double()
    return {
        delay: [
            (total / count).item() if count else None
            for total, count in zip(error_sums[delay], counts[delay], strict=True)
        ]
        for delay in delays
    }


def executed_offsets(delay: int, n_action_steps: int) -> range:
    """The offsets a rollout at `delay` executes of each chunk (after the frame it was predicted at)."""
    return range(delay, delay + n_action_steps)


def mean_over(errors: list[float | None], offsets: range) -> float | None:
    values = [errors[offset] for offset in offsets if offset < len(errors) and errors[offset] is not None]
    return float(np.mean(values)) if values else None


def errors_markdown(reports: list[dict[str, Any]], delays: Sequence[int]) -> str:
    """One row per checkpoint and chunk delay; a column per rollout delay: the mean error over the offsets
    that rollout executes (n_action_steps of them)."""
    headers = ["checkpoint", "policy", "chunk asked at delay"]
    headers += [f"offsets executed at delay {delay}" for delay in delays]
    rows = []
    for report in reports:
        for chunk_delay, errors in report["errors"].items():
            executed = [executed_offsets(delay, report["n_action_steps"]) for delay in delays]
            # A delay-d chunk starts at offset d: it serves rollouts at delay d (prefix) only.
            cells = [
                mean_over(errors, offsets) if chunk_delay in (0, delay) else None
                for delay, offsets in zip(delays, executed, strict=True)
            ]
            rows.append([report["checkpoint"], report["policy"], chunk_delay, *cells])
    meaning = (
        "Mean absolute error per action coordinate, in the dataset's units, over the chunk steps a "
        "rollout at each delay executes: at delay d, offsets d..d+n_action_steps-1 after the observed "
        "frame, from the delay-0 chunk (plain chunking) or from the delay-d chunk (prefix mode)."
    )
    return f"{meaning}\n\n{markdown_table(headers, rows, digits=4)}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="pretrained_model folders")
    parser.add_argument("--dataset-repo-id", required=True)
    parser.add_argument("--dataset-root", type=Path, default=None)
    add_delays_argument(parser, [0], "e.g. 0 4 8")
    parser.add_argument("--output-dir", type=Path, default=Path("chunk_errors_out"))
    args = parser.parse_args(argv)
    reports = []
    for checkpoint in args.checkpoints:
        policy, preprocessor, postprocessor = load_checkpoint(checkpoint)
        config = policy.config
        dataset = action_windows(
            args.dataset_repo_id, args.dataset_root, max(args.delays) + config.chunk_size
        )
        errors = chunk_errors(policy, preprocessor, postprocessor, dataset, args.delays)
        reports.append(
            {
                "checkpoint": str(checkpoint),
                "policy": config.type,
                "chunk_size": config.chunk_size,
                "n_action_steps": config.n_action_steps,
                "errors": errors,
            }
        )
    markdown = errors_markdown(reports, args.delays)
    report_writer.write_report(args.output_dir, "chunk_errors", reports, markdown)
    print(markdown)
    print(f"Wrote chunk_errors.json and .md to {args.output_dir}")


if __name__ == "__main__":
    main()
