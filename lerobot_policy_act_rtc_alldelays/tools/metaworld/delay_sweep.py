"""Closed-loop delay sweep in MetaWorld: success and chunk-boundary smoothness per inference delay and mode.

For one checkpoint (a `pretrained_model` folder) of this policy or of LeRobot's ACT, every valid (mode,
delay) setting runs the same episodes (seeds `--seed`, `--seed + 1`, ...; keep them apart from the
demonstration seeds) through LeRobot's own evaluation rollout (`lerobot.scripts.lerobot_eval.rollout`),
with the checkpoint's processors and LeRobot's MetaWorld env: the policy sees exactly what `lerobot-eval`
feeds it, except that `--frame-size` renders smaller frames than its 480 px, without shadows
(`metaworld.frames`; pass the size the dataset was recorded with). `--actions` names the action space the
checkpoint was trained in (as `lerobot-eval` takes LIBERO's `--env.control_mode`, the env, not the
checkpoint, says how an action is executed), the one `act-rtc-alldelays-metaworld-demos --actions`
recorded; a checkpoint saved by `lerobot-train` names its dataset, whose action names say which, and
another `--actions` is refused:

- `position` (the default): each env is wrapped in `metaworld.position.PositionTargets`, which turns the
  policy's end-effector target into MetaWorld's delta from the hand's commanded position;
- `delta`: the actions go to LeRobot's env unchanged, as in `lerobot-eval`.

The delay is emulated as the study emulates it (`study.evaluation.evaluated_policy`). This policy runs its
two inference modes in its own `select_action`:

- `prefix` (real-time chunking): the next chunk is conditioned on the `delay` actions still executing;
  valid for delays 0..rtc_max_delay.
- `discard` (plain chunking): the next chunk ignores them and its first `delay` actions are dropped; valid
  while `delay + n_action_steps <= chunk_size`, so it also covers delays beyond training.

LeRobot's ACT, which has no delay, runs the modes the study evaluates it in (`study.evaluation.
eval_settings`: `discard` through the study's `DelayedChunking`, which also needs `delay < n_action_steps`,
and any other chunked mode the study defines), at the delays `evaluated_policy` accepts; not temporal
ensembling, which has no chunk switches to measure.

Two measures per setting:
- success rate;
- chunk-boundary discontinuity: the mean action jump `||a_t - a_{t-1}||` at the steps where a new chunk's
  first action executes, divided by the mean step-to-step change at all other steps (inside chunks). 1.0
  means chunk switches are as smooth as the motion itself; larger means the robot jerks at every switch.
  Both means pool all episodes of the setting. Actions are measured as the policy sends them: position
  targets, or deltas before the env's own clipping to [-1, 1].

Writes `delay_sweep.json`, `delay_sweep.md` and `delay_sweep.png` (success and discontinuity vs delay,
one line per mode) to `--output-dir`.
"""

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.train import TRAIN_CONFIG_NAME
from lerobot.datasets.utils import INFO_PATH
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.envs.metaworld import create_metaworld_envs
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.scripts.lerobot_eval import rollout
from lerobot.utils.constants import HF_LEROBOT_HOME
from tqdm import tqdm

from ...configuration_act_relative_rtc import RTC_INFERENCE_MODES
from .. import report as report_writer
from ..arguments import add_delays_argument
from ..continuity import chunk_switch_changes, discontinuity_ratio
from ..report import format_value, markdown_table
from ..study.evaluation import eval_settings, evaluated_policy
from ..study.settings import TEMPORAL_ENSEMBLE
from ..study.variants import ACT
from .demos import (
    ACTION_NAMES,
    DEFAULT_TASK,
    default_to_headless_rendering,
    lerobot_mujoco_env,
    set_max_episode_steps,
    with_position_targets,
)
from .frames import LEROBOT_FRAME_SIZE, frame_size_kwargs, render_frames_at
from .position import ACTION_SPACES, check_action_space

DEFAULT_EVAL_SEED = 100_000  # far from the demonstration seeds (0, 1, ...)


class ChunkStartRecorder:
    """Records, for each chunk the policy predicts inside `select_action`, the step at which its first
    action executes (0-based, counted in `select_action` calls since the policy's `reset`), through the
    policy's public `on_chunk_start` hook."""

    def __init__(self, policy: torch.nn.Module):
        self.chunk_starts: list[int] = []
        policy.on_chunk_start = self.chunk_starts.append

    def clear(self) -> None:
        self.chunk_starts.clear()


def valid_delays(config: PreTrainedConfig, mode: str, candidates: Iterable[int] | None = None) -> list[int]:
    """The delays among `candidates` (default: 0..chunk_size) that `mode` accepts with this config."""
    candidates = range(config.chunk_size + 1) if candidates is None else candidates
    return [delay for delay in candidates if config.inference_setting_error(mode, delay) is None]


def act_settings(candidates: Iterable[int]) -> list[tuple[str, int]]:
    """The (mode, delay) pairs among `candidates` that the study evaluates LeRobot's ACT in, but temporal
    ensembling: a chunk every step has no switches to measure."""
    return [
        (mode, delay) for mode, delay in eval_settings(ACT, list(candidates)) if mode != TEMPORAL_ENSEMBLE
    ]


def sweep_modes(policy: PreTrainedPolicy) -> list[str]:
    """The modes the sweep runs `policy` in: this policy's inference modes; LeRobot's ACT's, those of
    `act_settings`."""
    if isinstance(policy, ACTPolicy):
        candidates = range(policy.config.chunk_size + 1)
        return list(dict.fromkeys(mode for mode, _ in act_settings(candidates)))
    return list(RTC_INFERENCE_MODES)


def act_runs(policy: ACTPolicy, mode: str, delay: int) -> bool:
    """Whether LeRobot's ACT `policy` runs `mode` at `delay` (`evaluated_policy`'s own rule decides)."""
    try:
        evaluated_policy(policy, mode, delay)
    except ValueError:
        return False
    return True


def valid_settings(
    policy: PreTrainedPolicy, modes: Sequence[str], candidates: Iterable[int] | None = None
) -> list[tuple[str, int]]:
    """The (mode, delay) pairs among `modes` and `candidates` (default: 0..chunk_size) that `policy` runs:
    this policy's, by its config's rules; LeRobot's ACT's, those the study evaluates it in
    (`act_settings`) that `evaluated_policy` accepts."""
    candidates = list(range(policy.config.chunk_size + 1) if candidates is None else candidates)
    if isinstance(policy, ACTPolicy):
        return [
            (mode, delay)
            for mode, delay in act_settings(candidates)
            if mode in modes and act_runs(policy, mode, delay)
        ]
    return [(mode, delay) for mode in modes for delay in valid_delays(policy.config, mode, candidates)]


@dataclass
class SettingResult:
    mode: str
    delay: int
    n_episodes: int
    successes: int
    success_rate: float
    mean_steps: float
    n_switches: int
    switch_jump_mean: float | None
    inside_change_mean: float | None
    discontinuity: float | None
    episodes: list[dict[str, Any]] = field(default_factory=list)


def run_setting(
    env,
    policy,
    recorder: ChunkStartRecorder | None,
    processors: tuple,
    mode: str,
    delay: int,
    seeds: list[int],
    progress: tqdm | None = None,
) -> SettingResult:
    """Runs one episode per seed at one (mode, delay) and aggregates the two measures. Without a `recorder`
    (LeRobot's ACT has no chunk hook), chunks start every `n_action_steps` steps from step 0: the schedule of
    ACT's own `select_action` and of `DelayedChunking`."""
    evaluated = evaluated_policy(policy, mode, delay)
    env_preprocessor, env_postprocessor, preprocessor, postprocessor = processors
    episodes, all_jumps, all_inside = [], [], []
    for seed in seeds:
        # MetaWorld draws object positions from NumPy's global generator; LeRobot's env ignores reset seeds.
        np.random.seed(seed)
        if recorder is not None:
            recorder.clear()
        with torch.no_grad():
            result = rollout(
                env, evaluated, env_preprocessor, env_postprocessor, preprocessor, postprocessor, seeds=[seed]
            )
        actions = result["action"][0].numpy()  # a batch of one env: rollout stops when it is done
        success = bool(result["success"][0].any())
        if recorder is not None:
            chunk_starts = recorder.chunk_starts
        else:
            chunk_starts = range(0, len(actions), policy.config.n_action_steps)
        jumps, inside = chunk_switch_changes(actions, chunk_starts)
        all_jumps.extend(jumps.tolist())
        all_inside.extend(inside.tolist())
        episodes.append(
            {
                "seed": seed,
                "success": success,
                "steps": len(actions),
                "n_switches": len(jumps),
                "discontinuity": discontinuity_ratio(jumps, inside),
            }
        )
        if progress is not None:
            progress.update()
            progress.set_postfix(mode=mode, delay=delay, successes=sum(e["success"] for e in episodes))
    return SettingResult(
        mode=mode,
        delay=delay,
        n_episodes=len(seeds),
        successes=sum(e["success"] for e in episodes),
        success_rate=sum(e["success"] for e in episodes) / len(seeds),
        mean_steps=float(np.mean([e["steps"] for e in episodes])),
        n_switches=len(all_jumps),
        switch_jump_mean=float(np.mean(all_jumps)) if all_jumps else None,
        inside_change_mean=float(np.mean(all_inside)) if all_inside else None,
        discontinuity=discontinuity_ratio(all_jumps, all_inside),
        episodes=episodes,
    )


def make_sweep_env(
    env_cfg: MetaworldEnvConfig, actions: str, frame_size: int | None = None
) -> gym.vector.SyncVectorEnv:
    """One env of `env_cfg`'s task in a vector env, for `rollout`. LeRobot's `make_env` builds it, in 0.4.4
    and 0.6.1 alike, with `create_metaworld_envs(..., env_cls=SyncVectorEnv)`; this calls that factory the
    same way, except that the `env_cls` hook makes each env render `frame_size` px frames without shadows
    (`metaworld.frames`; None: LeRobot's 480 px) and, under position targets, wraps it in
    `PositionTargets`."""
    check_action_space(actions)

    def make_env(make: Callable[[], gym.Env]) -> gym.Env:
        env = make()
        if frame_size is not None:
            render_frames_at(lerobot_mujoco_env(env), frame_size)
        return with_position_targets(env) if actions == "position" else env

    def vector_env(factories: list[Callable[[], gym.Env]]) -> gym.vector.SyncVectorEnv:
        return gym.vector.SyncVectorEnv([lambda make=make: make_env(make) for make in factories])

    gym_kwargs = {**env_cfg.gym_kwargs, **frame_size_kwargs(frame_size)}
    envs = create_metaworld_envs(env_cfg.task, n_envs=1, gym_kwargs=gym_kwargs, env_cls=vector_env)
    return next(iter(next(iter(envs.values())).values()))


def check_trained_actions(checkpoint: Path, actions: str) -> None:
    """Refuses to evaluate `checkpoint` in the `actions` space when it was trained in the other one: every
    action would run as the wrong kind, without an error. lerobot-train's `train_config.json` beside the
    weights names the dataset, whose action names say which space it recorded (`ACTION_NAMES`). A checkpoint
    without one (saved by `save_pretrained` alone), or whose dataset is not on this machine, cannot say: it
    is evaluated as told."""
    train_config = checkpoint / TRAIN_CONFIG_NAME
    if not train_config.exists():
        return
    dataset = json.loads(train_config.read_text())["dataset"]
    root = Path(dataset["root"]) if dataset.get("root") else HF_LEROBOT_HOME / dataset["repo_id"]
    if not (root / INFO_PATH).exists():
        logging.warning(
            f"The dataset {checkpoint} was trained on is not at {root}: its action space is unchecked, "
            f"evaluated as --actions {actions}."
        )
        return
    names = json.loads((root / INFO_PATH).read_text())["features"]["action"]["names"]
    if names == ACTION_NAMES[actions]:
        return
    trained = next((space for space, expected in ACTION_NAMES.items() if names == expected), None)
    if trained is None:
        raise ValueError(
            f"{checkpoint} was trained on {root}, whose actions {names} are none of the MetaWorld action "
            f"spaces the sweep runs ({ACTION_NAMES}): evaluate checkpoints trained on "
            "act-rtc-alldelays-metaworld-demos datasets."
        )
    raise ValueError(
        f"{checkpoint} was trained on {trained} actions ({names}, the action names of its dataset {root}), "
        f"but --actions {actions} would execute its actions as {actions} actions ({ACTION_NAMES[actions]}): "
        f"pass --actions {trained}."
    )


def with_blend_steps(config: PreTrainedConfig, blend_steps: int | None) -> PreTrainedConfig:
    """`config` with `rtc_blend_steps=blend_steps`, checked by the config's own rules (None: unchanged)."""
    if blend_steps is None:
        return config
    if isinstance(config, ACTConfig):
        raise ValueError(
            "--blend-steps sets this policy's rtc_blend_steps; LeRobot's ACT has none (its 'blend' mode "
            "blends with the steps this policy's default gives its chunking): leave --blend-steps out."
        )
    return dataclasses.replace(config, rtc_blend_steps=blend_steps)


def check_frame_size(config: PreTrainedConfig, frame_size: int | None) -> None:
    """Refuses to feed LeRobot's ACT frames of another size than its training images: it does not resize
    them (this policy does, to its `downscale_img_square`)."""
    if not isinstance(config, ACTConfig):
        return
    side = LEROBOT_FRAME_SIZE if frame_size is None else frame_size
    for key, feature in config.image_features.items():
        if tuple(feature.shape[1:]) != (side, side):
            raise ValueError(
                f"LeRobot's ACT takes its {key} at the size it was trained on, {feature.shape[1:]} px, and "
                f"does not resize it: the sweep renders {side} px frames. Pass --frame-size "
                f"{feature.shape[-1]}, the size its dataset was recorded with (a square image)."
            )


def run_sweep(
    checkpoint: str | Path,
    task: str = DEFAULT_TASK,
    n_episodes: int = 5,
    seed: int = DEFAULT_EVAL_SEED,
    max_steps: int = 200,
    modes: Sequence[str] | None = None,
    delays: Iterable[int] | None = None,
    device: str = "cpu",
    actions: str = "position",
    frame_size: int | None = None,
    blend_steps: int | None = None,
) -> dict[str, Any]:
    """Evaluates `checkpoint` (this policy's or LeRobot's ACT's), trained on `actions` (`ACTION_SPACES`),
    at every valid (mode, delay), on `frame_size` px frames (None: LeRobot's 480). `modes` restricts the
    modes (default: every mode the policy runs, `sweep_modes`), `delays` the candidate delays (default:
    every delay each mode accepts). `blend_steps` runs this policy with that `rtc_blend_steps` instead of
    the checkpoint's (blending acts at inference only, so the same weights show what it does). Returns the
    JSON-ready report."""
    check_action_space(actions)
    check_trained_actions(Path(checkpoint), actions)
    checkpoint = str(checkpoint)
    env_cfg = MetaworldEnvConfig(task=task)
    policy_cfg = with_blend_steps(PreTrainedConfig.from_pretrained(checkpoint), blend_steps)
    policy_cfg.pretrained_path = checkpoint
    policy_cfg.device = device
    if getattr(policy_cfg, "temporal_ensemble_coeff", None) is not None:
        raise ValueError("The sweep measures chunk switches: use a checkpoint without temporal ensembling.")
    check_frame_size(policy_cfg, frame_size)

    # As lerobot-eval builds them (lerobot.scripts.lerobot_eval.eval_main).
    policy = make_policy(cfg=policy_cfg, env_cfg=env_cfg)
    policy.eval()
    runnable = sweep_modes(policy)
    modes = runnable if modes is None else list(modes)
    unknown = [mode for mode in modes if mode not in runnable]
    if unknown:
        raise ValueError(f"A {policy_cfg.type} checkpoint runs modes {runnable}, not {unknown}: pass those.")
    settings = valid_settings(policy, modes, delays)
    if not settings:
        raise ValueError(
            f"No delay among {delays} is valid for modes {modes} with this {policy_cfg.type} checkpoint."
        )
    preprocessor, postprocessor = make_pre_post_processors(
        policy_cfg=policy_cfg,
        pretrained_path=checkpoint,
        preprocessor_overrides={"device_processor": {"device": device}},
    )
    processors = (
        *make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=policy_cfg),
        preprocessor,
        postprocessor,
    )
    recorder = None if isinstance(policy, ACTPolicy) else ChunkStartRecorder(policy)
    default_to_headless_rendering()
    env = make_sweep_env(env_cfg, actions, frame_size)
    # rollout() runs up to the env's own limit (MetaWorld's 500); cap it for a shorter sweep. The limit is
    # LeRobot's env's attribute (`unwrapped`), which rollout reads through any wrapper.
    env_limit = set_max_episode_steps(env.envs[0].unwrapped, max_steps)

    seeds = list(range(seed, seed + n_episodes))
    results = []
    progress = tqdm(total=len(settings) * n_episodes, desc="Delay sweep", unit="episode")
    try:
        for mode, delay in settings:
            results.append(run_setting(env, policy, recorder, processors, mode, delay, seeds, progress))
            progress.write(format_setting(results[-1]))
    finally:
        progress.close()
        env.close()
    config = policy.config
    return {
        "checkpoint": checkpoint,
        "policy": config.type,
        "task": task,
        "actions": actions,
        "frame_size": LEROBOT_FRAME_SIZE if frame_size is None else frame_size,
        "seeds": seeds,
        "max_steps": env_limit,
        "chunk_size": config.chunk_size,
        "n_action_steps": config.n_action_steps,
        "rtc_max_delay": getattr(config, "rtc_max_delay", None),  # LeRobot's ACT trains no delay
        "blend_steps": getattr(config, "blend_steps", None),  # None for LeRobot's ACT, which has none
        "results": [asdict(r) for r in results],
    }


def format_setting(result: SettingResult) -> str:
    return (
        f"{result.mode:>7} delay {result.delay:>2}: success {result.successes}/{result.n_episodes}, "
        f"discontinuity {format_value(result.discontinuity)} ({result.n_switches} switches)"
    )


def sweep_markdown(report: dict[str, Any]) -> str:
    max_delay, blend_steps = report["rtc_max_delay"], report.get("blend_steps")
    header = (
        f"Delay sweep of `{report['checkpoint']}` ({report['policy']}) on `{report['task']}` "
        f"({report['actions']} actions, {report['frame_size']} px frames): {len(report['seeds'])} episodes "
        f"per setting (seeds {report['seeds'][0]}..{report['seeds'][-1]}, at most {report['max_steps']} "
        f"steps), chunk_size {report['chunk_size']}, n_action_steps {report['n_action_steps']}"
        f"{'' if max_delay is None else f', rtc_max_delay {max_delay}'}"
        f"{'' if blend_steps is None else f', blend_steps {blend_steps}'}."
    )
    meaning = (
        "Discontinuity = mean action jump at chunk switches / mean step-to-step change inside chunks "
        "(1.0 = switches as smooth as the motion)."
    )
    headers = ["mode", "delay", "success", "mean steps", "switches"]
    headers += ["jump at switch", "change inside", "discontinuity"]
    rows = [
        [
            r["mode"],
            r["delay"],
            f"{r['successes']}/{r['n_episodes']}",
            format_value(r["mean_steps"], 1),
            r["n_switches"],
            format_value(r["switch_jump_mean"], 3),
            format_value(r["inside_change_mean"], 3),
            r["discontinuity"],
        ]
        for r in report["results"]
    ]
    return f"{header}\n\n{meaning}\n\n{markdown_table(headers, rows)}\n"


def draw_sweep(report: dict[str, Any], plt):
    """Two panels, success rate and discontinuity vs delay, one line per mode."""
    from matplotlib.ticker import MaxNLocator

    figure, (success_axis, discontinuity_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in report["results"]):
        rows = [r for r in report["results"] if r["mode"] == mode]
        delays = [r["delay"] for r in rows]
        success_axis.plot(delays, [r["success_rate"] for r in rows], marker="o", label=mode)
        discontinuity_axis.plot(
            delays,
            [np.nan if r["discontinuity"] is None else r["discontinuity"] for r in rows],
            marker="o",
            label=mode,
        )
    success_axis.set(xlabel="inference delay (steps)", ylabel="success rate", ylim=(-0.05, 1.05))
    discontinuity_axis.axhline(1.0, color="gray", linestyle=":", linewidth=1)
    discontinuity_axis.set(
        xlabel="inference delay (steps)", ylabel="jump at switch / change inside chunk", ylim=(0, None)
    )
    max_delay = report["rtc_max_delay"]  # None for LeRobot's ACT, which trains no delay
    for axis, title in ((success_axis, "Success"), (discontinuity_axis, "Chunk-boundary discontinuity")):
        if max_delay is not None:
            axis.axvline(max_delay, color="gray", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # delays are whole control steps
        axis.legend()
        axis.grid(alpha=0.3)
    title = f"{report['task']}: {len(report['seeds'])} episodes per point"
    figure.suptitle(title if max_delay is None else f"{title} (dashed: rtc_max_delay)")
    figure.tight_layout()
    return figure


def write_report(report: dict[str, Any], output_dir: Path) -> str:
    """Writes delay_sweep.{json,md,png} through the tools' report writer and returns the markdown."""
    markdown = sweep_markdown(report)
    report_writer.write_report(
        output_dir, "delay_sweep", report, markdown, {"delay_sweep": partial(draw_sweep, report)}
    )
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", type=Path, help="a pretrained_model folder (config, weights, processors)"
    )
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--episodes", type=int, default=5, help="episodes per (mode, delay)")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first episode seed")
    parser.add_argument("--max-steps", type=int, default=200, help="step cap per episode (env limit: 500)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help=f"default: every mode the checkpoint runs (this policy: {' '.join(RTC_INFERENCE_MODES)}; "
        "LeRobot's ACT: the chunked modes the study evaluates it in)",
    )
    add_delays_argument(parser, None, "candidate delays, e.g. 0 2 4 8 (default: all valid per mode)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--actions",
        choices=ACTION_SPACES,
        default="position",
        help="the action space the checkpoint was trained in (its dataset's: target_* names are position); "
        "a lerobot-train checkpoint whose dataset says otherwise is refused",
    )
    parser.add_argument(
        "--frame-size",
        type=int,
        default=None,
        help="render frames of this side, without shadows (default: LeRobot's 480 px): the dataset's "
        "--frame-size; LeRobot's ACT needs its training image size",
    )
    parser.add_argument(
        "--blend-steps",
        type=int,
        default=None,
        help="this policy's rtc_blend_steps for the sweep instead of the checkpoint's (0: no blending)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("delay_sweep_out"))
    args = parser.parse_args(argv)
    report = run_sweep(
        args.checkpoint,
        args.task,
        args.episodes,
        args.seed,
        args.max_steps,
        args.modes,
        args.delays,
        args.device,
        args.actions,
        args.frame_size,
        args.blend_steps,
    )
    print(write_report(report, args.output_dir))
    print(f"Wrote delay_sweep.json, .md and .png to {args.output_dir}")


if __name__ == "__main__":
    main()
