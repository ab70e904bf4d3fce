"""Prefix collapse: what the action prefix does to this policy's chunks in closed loop, per training seed.

Trains one study variant per training seed exactly as the study does (same demonstrations, seeds and
batches, so a seed's model is the study's), evaluates it at one delay in prefix and discard mode on the
study's episodes, and measures, at every chunk request of the prefix-mode rollout, the **prefix pull**: how
far the chunk conditioned on the committed prefix lies from the chunk the same observation gives without it
(the delay-0 chunk's rows `delay..delay + n_action_steps - 1`, the ones discard mode would execute), as the
mean absolute difference per action coordinate. On the training frames the same pull is measured with the
expert's own next actions as the prefix (`offline`), and the study's prefix reliance beside it. A seed whose
prefix collapses while discard succeeds shows where the prefix takes the chunk: a closed-loop pull far above
the offline one means the policy follows its own committed actions away from what the observation says.

    python -m lerobot_policy_act_rtc_alldelays.tools.study.prefix_collapse --task hammer-v3 --demos noisy \\
        --train-seeds 0 1 2 --steps 600 --delay 8 --output-dir results/prefix_collapse_hammer

writes `prefix_collapse.json` (per seed: successes per mode, the closed-loop pull per request index, the
offline pull and the prefix reliance) and `prefix_collapse.md`.
"""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.utils.constants import ACTION
from torch import Tensor

from ...modeling_act_relative_rtc import ACTRelativeRTCPolicy
from .. import report as report_writer
from ..metaworld.state import DEMO_CONDITIONS, record_demos
from ..report import markdown_table
from .data import TrainingData, demo_stats
from .evaluation import evaluated_policy, make_vector_env, run_episodes
from .prefix_reliance import DIAGNOSTIC_FRAMES, expert_actions, prefix_reliance
from .settings import DEMO_MAX_STEPS, StudySettings
from .training import Trainer
from .variants import DEFAULT, PEERS, VARIANTS

MODES = ("prefix", "discard")


class PrefixPullProbe:
    """Wraps `policy.predict_action_chunk` (the public method its `select_action` calls): at each request
    with a prefix it also predicts the chunk without one from the same observation, and records the pull:
    the mean difference per action coordinate [B, A] between the rows that would execute. The returned
    chunk is the prefix-conditioned one: the rollout is unchanged."""

    def __init__(self, policy: ACTRelativeRTCPolicy):
        self.policy = policy
        self.predict = policy.predict_action_chunk
        # One [B, A] per request with a prefix, in request order: the signed mean difference per coordinate.
        self.pulls: list[Tensor] = []
        policy.predict_action_chunk = self

    def __call__(
        self, batch: dict[str, Tensor], delay: int = 0, action_prefix: Tensor | None = None, **anchor
    ) -> Tensor:
        """`anchor`: the `last_action` an anchored policy's `select_action` passes, to both predictions."""
        chunk = self.predict(batch, delay=delay, action_prefix=action_prefix, **anchor)
        if delay > 0:
            rows = self.policy.config.n_action_steps
            alone = self.predict(batch, **anchor)[:, delay : delay + rows]  # what discard mode would execute
            self.pulls.append((chunk[:, :rows] - alone).mean(1))
        return chunk

    def remove(self) -> None:
        del self.policy.predict_action_chunk  # the instance attribute: the class's method again


@torch.no_grad()
def offline_measures(
    policy: ACTRelativeRTCPolicy, windows: dict[str, Tensor], delay: int, seed: int = 0
) -> dict[str, Any]:
    """On training frames, with the expert's next `delay` actions as the prefix: the prefix pull (`pull`,
    and per coordinate its mean, `bias`), and the mean absolute error against the expert's actions of the
    rows each mode would execute (offsets delay..delay + n_action_steps - 1 after the frame): those of the
    delay-0 chunk (`discard_rows_error`) and of the prefix-conditioned one (`prefix_rows_error`)."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randperm(len(windows[ACTION]), generator=generator)[:DIAGNOSTIC_FRAMES]
    batch = {key: value[frames] for key, value in windows.items() if key.startswith("observation.")}
    actions, is_pad, last_action = expert_actions(policy, windows, frames)  # [N, W, A], [N, W], [N, A]
    rows = policy.config.n_action_steps
    with_prefix = policy.predict_action_chunk(batch, delay, actions[:, :delay], last_action)[:, :rows]
    alone = policy.predict_action_chunk(batch, last_action=last_action)[:, delay : delay + rows]
    expert = actions[:, delay : delay + rows]  # [N, rows, A]
    real = ~is_pad[:, delay : delay + rows]  # [N, rows]

    def error(chunk: Tensor) -> float:
        return (chunk - expert).abs().mean(-1)[real].mean().item()

    return {
        "pull": (with_prefix - alone).abs().mean().item(),
        "bias": (with_prefix - alone).mean((0, 1)).tolist(),
        "discard_rows_error": error(alone),
        "prefix_rows_error": error(with_prefix),
    }


def pull_summary(
    pulls: list[Tensor], episodes: list[dict[str, Any]], delay: int, n_action_steps: int
) -> dict[str, Any]:
    """The closed-loop pulls (signed differences [B, A] per request) of one rollout, counting each
    episode's requests until it ended: the mean absolute pull over the action's coordinates per request
    index (`per_request`), over the episodes that succeeded and over those that failed; per action
    coordinate its mean absolute value (`per_coordinate`) and its mean (`bias`: where the prefix moves the
    chunk on average; `bias_per_request` per request index). Request `k` (from 0) with a prefix is made
    at step `(k + 1) * n_action_steps - delay`: the first chunk of an episode has no prefix."""
    signed = torch.stack(pulls)  # [K requests, B episodes, A]
    pull = signed.abs().mean(-1)  # [K, B]
    request_steps = (torch.arange(len(pulls)) + 1) * n_action_steps - delay
    lengths = torch.tensor([episode["episode_steps"] for episode in episodes])
    running = request_steps[:, None] < lengths[None, :]  # [K, B]
    succeeded = torch.tensor([episode["success"] for episode in episodes])

    def mean(values: Tensor, mask: Tensor) -> float | None:
        return values[mask].mean().item() if mask.any() else None

    return {
        "per_request": [mean(pull[k], running[k]) for k in range(len(pulls))],
        "succeeded": mean(pull, running & succeeded[None, :]),
        "failed": mean(pull, running & ~succeeded[None, :]),
        "per_coordinate": signed[running].abs().mean(0).tolist(),
        "bias": signed[running].mean(0).tolist(),
        "bias_per_request": [
            signed[k][running[k]].mean(0).tolist() if running[k].any() else None for k in range(len(pulls))
        ],
    }


def run_seed(
    settings: StudySettings,
    variant: str,
    seed: int,
    steps: int,
    delay: int,
    data: TrainingData,
    env,
    processors,
) -> dict[str, Any]:
    trainer = Trainer(variant, seed, settings, data)
    trainer.train(steps)
    n_eval = settings.episodes_per_seed
    seeds = [settings.eval_seed + seed * n_eval + i for i in range(n_eval)]  # the study's episodes
    result: dict[str, Any] = {"train_seed": seed, "train_steps": steps}
    for mode in MODES:
        policy = evaluated_policy(trainer.policy, mode, delay)
        probe = PrefixPullProbe(trainer.policy)
        try:
            episodes = run_episodes(
                env,
                policy,
                trainer.preprocessor,
                trainer.postprocessor,
                processors,
                seeds,
                settings.n_action_steps,
            )
        finally:
            probe.remove()
        result[f"{mode}_successes"] = sum(e["success"] for e in episodes)
        if mode == "prefix":
            # Chunks as `predict_action_chunk` returns them, offline too: the postprocessor's input space.
            result["closed_loop_pull"] = pull_summary(probe.pulls, episodes, delay, settings.n_action_steps)
    result["offline"] = offline_measures(trainer.policy, trainer.windows, delay)
    result["prefix_reliance"] = prefix_reliance(trainer.policy, trainer.windows, data.episode, [delay])[delay]
    return result


def collapse_markdown(report: dict[str, Any]) -> str:
    headers = [
        "seed",
        "prefix successes",
        "discard successes",
        "closed-loop pull (first 3 requests)",
        "closed-loop pull (mean)",
        "pull, succeeded / failed episodes",
        "pull per action coordinate",
        "bias per action coordinate",
        "offline pull",
        "offline bias per action coordinate",
        "offline error, discard / prefix rows",
        "prefix reliance",
    ]
    rows = []
    for seed in report["seeds"]:
        outcome = seed["closed_loop_pull"]
        pulls = [p for p in outcome["per_request"] if p is not None]
        rows.append(
            [
                seed["train_seed"],
                f"{seed['prefix_successes']}/{report['episodes']}",
                f"{seed['discard_successes']}/{report['episodes']}",
                " ".join(f"{p:.4f}" for p in pulls[:3]),
                float(np.mean(pulls)) if pulls else None,
                " / ".join(
                    "-" if outcome[k] is None else f"{outcome[k]:.4f}" for k in ("succeeded", "failed")
                ),
                " ".join(f"{value:.4f}" for value in outcome["per_coordinate"]),
                " ".join(f"{value:+.4f}" for value in outcome["bias"]),
                seed["offline"]["pull"],
                " ".join(f"{value:+.4f}" for value in seed["offline"]["bias"]),
                f"{seed['offline']['discard_rows_error']:.4f} / {seed['offline']['prefix_rows_error']:.4f}",
                seed["prefix_reliance"]["prefix_reliance"],
            ]
        )
    header = (
        f"`{report['task']}`, {report['demos']} demos, variant `{report['variant']}`, "
        f"{report['steps']} steps, delay {report['delay']}, {report['episodes']} episodes per seed and mode "
        "(the study's episodes). "
        "Prefix pull: mean absolute difference per action coordinate between the chunk conditioned on the "
        "prefix and the chunk the same observation gives without it (the rows discard mode executes), at "
        "each prefix-mode request in closed loop, and on training frames with the expert's prefix (offline)."
    )
    return f"{header}\n\n{markdown_table(headers, rows, digits=4)}\n"


def collapse_settings(task: str, demos: str, variant: str) -> StudySettings:
    """The study's settings for one cell of one variant (its demonstrations, sizes, schedule and episodes),
    checked; one model per seed, so no equal wall-clock budget."""
    settings = StudySettings(tasks=(task,), demos=(demos,), variants=(variant,), equal_time=False)
    settings.check()
    return settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--demos", choices=DEMO_CONDITIONS, default="noisy")
    parser.add_argument("--variant", choices=[v for v in VARIANTS if v not in PEERS], default=DEFAULT)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--delay", type=int, default=8)
    parser.add_argument("--output-dir", type=Path, default=Path("prefix_collapse_out"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    args = parse_args(argv)
    settings = collapse_settings(args.task, args.demos, args.variant)
    demos = record_demos(
        args.task, settings.demo_episodes, args.demos, max_steps=DEMO_MAX_STEPS, actions=settings.actions
    )
    data = TrainingData(demo_stats(demos), demos)
    env = make_vector_env(args.task, settings.episodes_per_seed, settings.max_steps, settings.actions)
    processors = make_env_pre_post_processors(MetaworldEnvConfig(task=args.task), None)
    seeds = []
    try:
        for seed in args.train_seeds:
            seeds.append(
                run_seed(settings, args.variant, seed, args.steps, args.delay, data, env, processors)
            )
            log(
                f"seed {seed}: prefix {seeds[-1]['prefix_successes']}, "
                f"discard {seeds[-1]['discard_successes']}"
            )
    finally:
        env.close()
    report = {
        "task": args.task,
        "demos": args.demos,
        "variant": args.variant,
        "steps": args.steps,
        "delay": args.delay,
        "episodes": settings.episodes_per_seed,
        "seeds": seeds,
    }
    markdown = collapse_markdown(report)
    report_writer.write_report(args.output_dir, "prefix_collapse", report, markdown)
    log(markdown)
    return report


if __name__ == "__main__":
    main()
