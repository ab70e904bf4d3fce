"""Closed-loop delay sweep in MetaWorld: success and chunk-boundary smoothness per inference delay and mode.

For one checkpoint (a `pretrained_model` folder), every valid (mode, delay) setting runs the same episodes
(seeds `--seed`, `--seed + 1`, ...; keep them apart from the demonstration seeds) through LeRobot's own
evaluation rollout (`lerobot.scripts.lerobot_eval.rollout`), with the checkpoint's processors and LeRobot's
MetaWorld env: the policy sees exactly what `lerobot-eval` feeds it. `select_action` emulates the delay:

- `prefix` (real-time chunking): the next chunk is conditioned on the `delay` actions still executing;
  valid for delays 0..rtc_max_delay.
- `discard` (plain chunking): the next chunk ignores them and its first `delay` actions are dropped; valid
  while `delay + n_action_steps <= chunk_size`, so it also covers delays beyond training.

Two measures per setting:
- success rate;
- chunk-boundary discontinuity: the mean action jump `||a_t - a_{t-1}||` at the steps where a new chunk's
  first action executes, divided by the mean step-to-step change at all other steps (inside chunks). 1.0
  means chunk switches are as smooth as the motion itself; larger means the robot jerks at every switch.
  Both means pool all episodes of the setting. Actions are measured as sent to the env (before the
  env's own clipping to [-1, 1]).

Writes `delay_sweep.json`, `delay_sweep.md` and `delay_sweep.png` (success and discontinuity vs delay,
one line per mode) to `--output-dir`.
"""

import argparse
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.factory import make_env, make_env_pre_post_processors
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.scripts.lerobot_eval import rollout
from tqdm import tqdm

from ..configuration_act_relative_rtc import RTC_INFERENCE_MODES
from .metaworld_demos import DEFAULT_TASK, default_to_headless_rendering

DEFAULT_EVAL_SEED = 100_000  # far from the demonstration seeds (0, 1, ...)


def chunk_switch_changes(actions: np.ndarray, chunk_starts: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Executed actions [T, A] and the steps at which chunks start -> (action jumps at chunk switches,
    step-to-step changes inside chunks), both 1-D. A chunk starting at step 0 is no switch: nothing ran
    before it."""
    changes = np.linalg.norm(np.diff(np.asarray(actions, dtype=np.float64), axis=0), axis=-1)
    is_switch = np.zeros(len(changes), dtype=bool)
    for start in chunk_starts:
        if 1 <= start < len(actions):
            is_switch[start - 1] = True  # changes[t - 1] = ||a_t - a_{t-1}||
    return changes[is_switch], changes[~is_switch]


def discontinuity_ratio(switch_jumps: Sequence[float], inside_changes: Sequence[float]) -> float | None:
    """Mean jump at chunk switches over mean change inside chunks; None when either is undefined."""
    if len(switch_jumps) == 0 or len(inside_changes) == 0:
        return None
    inside = float(np.mean(inside_changes))
    if inside == 0.0:
        return None
    return float(np.mean(switch_jumps)) / inside


class ChunkStartRecorder:
    """Records, for each chunk the policy predicts inside `select_action`, the step at which its first
    action executes (0-based, counted in `select_action` calls since `clear`).

    Installs itself by wrapping the two methods on the policy instance.
    """

    def __init__(self, policy: torch.nn.Module):
        self._policy = policy
        self._select_action = policy.select_action
        self._predict_action_chunk = policy.predict_action_chunk
        policy.select_action = self.select_action
        policy.predict_action_chunk = self.predict_action_chunk
        self.clear()

    def clear(self) -> None:
        self.steps = 0
        self.chunk_starts: list[int] = []

    def select_action(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        action = self._select_action(batch)
        self.steps += 1
        return action

    def predict_action_chunk(self, batch: dict[str, torch.Tensor], *args, **kwargs) -> torch.Tensor:
        # In both modes the actions still queued execute first; the new chunk's actions follow them.
        self.chunk_starts.append(self.steps + len(self._policy._action_queue))
        return self._predict_action_chunk(batch, *args, **kwargs)


def set_inference_delay(config: PreTrainedConfig, mode: str, delay: int) -> None:
    """Sets the emulated delay and mode, validated by the config's own rules (ValueError if invalid; the
    config is then left unchanged)."""
    previous = (config.rtc_inference_mode, config.rtc_inference_delay)
    config.rtc_inference_mode, config.rtc_inference_delay = mode, delay
    try:
        config._validate_fields()
    except ValueError:
        config.rtc_inference_mode, config.rtc_inference_delay = previous
        raise


def valid_delays(config: PreTrainedConfig, mode: str, candidates: Iterable[int] | None = None) -> list[int]:
    """The delays among `candidates` (default: 0..chunk_size) that `mode` accepts with this config."""
    candidates = range(config.chunk_size + 1) if candidates is None else candidates
    previous = (config.rtc_inference_mode, config.rtc_inference_delay)
    valid = []
    for delay in candidates:
        try:
            set_inference_delay(config, mode, delay)
        except ValueError:
            continue
        valid.append(delay)
    config.rtc_inference_mode, config.rtc_inference_delay = previous
    return valid


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
    recorder: ChunkStartRecorder,
    processors: tuple,
    mode: str,
    delay: int,
    seeds: list[int],
    progress: tqdm | None = None,
) -> SettingResult:
    """Runs one episode per seed at one (mode, delay) and aggregates the two measures."""
    set_inference_delay(policy.config, mode, delay)
    env_preprocessor, env_postprocessor, preprocessor, postprocessor = processors
    episodes, all_jumps, all_inside = [], [], []
    for seed in seeds:
        # MetaWorld draws object positions from NumPy's global generator; LeRobot's env ignores reset seeds.
        np.random.seed(seed)
        recorder.clear()
        with torch.no_grad():
            result = rollout(
                env, policy, env_preprocessor, env_postprocessor, preprocessor, postprocessor, seeds=[seed]
            )
        actions = result["action"][0].numpy()  # a batch of one env: rollout stops when it is done
        success = bool(result["success"][0].any())
        jumps, inside = chunk_switch_changes(actions, recorder.chunk_starts)
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


def run_sweep(
    checkpoint: str | Path,
    task: str = DEFAULT_TASK,
    n_episodes: int = 5,
    seed: int = DEFAULT_EVAL_SEED,
    max_steps: int = 200,
    modes: Sequence[str] = RTC_INFERENCE_MODES,
    delays: Iterable[int] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluates `checkpoint` at every valid (mode, delay). `delays` restricts the candidates (default:
    every delay each mode accepts). Returns the JSON-ready report."""
    checkpoint = str(checkpoint)
    env_cfg = MetaworldEnvConfig(task=task)
    policy_cfg = PreTrainedConfig.from_pretrained(checkpoint)
    policy_cfg.pretrained_path = checkpoint
    policy_cfg.device = device
    if getattr(policy_cfg, "temporal_ensemble_coeff", None) is not None:
        raise ValueError("The sweep measures chunk switches: use a checkpoint without temporal ensembling.")
    settings = [(mode, d) for mode in modes for d in valid_delays(policy_cfg, mode, delays)]
    if not settings:
        raise ValueError(f"No delay among {delays} is valid for modes {list(modes)} with this checkpoint.")

    # As lerobot-eval builds them (lerobot.scripts.lerobot_eval.eval_main).
    policy = make_policy(cfg=policy_cfg, env_cfg=env_cfg)
    policy.eval()
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
    recorder = ChunkStartRecorder(policy)
    default_to_headless_rendering()
    envs = make_env(env_cfg, n_envs=1)
    env = next(iter(next(iter(envs.values())).values()))
    # rollout() runs up to the env's `_max_episode_steps` (MetaWorld's 500); cap it for a shorter sweep.
    env_limit = env.envs[0]._max_episode_steps
    env.envs[0]._max_episode_steps = min(max_steps, env_limit)

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
        "task": task,
        "seeds": seeds,
        "max_steps": min(max_steps, env_limit),
        "chunk_size": config.chunk_size,
        "n_action_steps": config.n_action_steps,
        "rtc_max_delay": config.rtc_max_delay,
        "results": [asdict(r) for r in results],
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_setting(result: SettingResult) -> str:
    return (
        f"{result.mode:>7} delay {result.delay:>2}: success {result.successes}/{result.n_episodes}, "
        f"discontinuity {_fmt(result.discontinuity)} ({result.n_switches} switches)"
    )


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        f"Delay sweep of `{report['checkpoint']}` on `{report['task']}`: {len(report['seeds'])} episodes "
        f"per setting (seeds {report['seeds'][0]}..{report['seeds'][-1]}, at most {report['max_steps']} "
        f"steps), chunk_size {report['chunk_size']}, n_action_steps {report['n_action_steps']}, "
        f"rtc_max_delay {report['rtc_max_delay']}.",
        "",
        "Discontinuity = mean action jump at chunk switches / mean step-to-step change inside chunks "
        "(1.0 = switches as smooth as the motion).",
        "",
        "| mode | delay | success | mean steps | switches | jump at switch | change inside | discontinuity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['mode']} | {r['delay']} | {r['successes']}/{r['n_episodes']} | {r['mean_steps']:.1f} | "
            f"{r['n_switches']} | {_fmt(r['switch_jump_mean'], 3)} | {_fmt(r['inside_change_mean'], 3)} | "
            f"{_fmt(r['discontinuity'])} |"
        )
    return "\n".join(lines) + "\n"


def plot_sweep(report: dict[str, Any], path: Path) -> bool:
    """Two panels, success rate and discontinuity vs delay, one line per mode. False if matplotlib is
    missing (it comes with the `plots` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        logging.warning("matplotlib is not installed (pip install '.[plots]'): no plot written.")
        return False
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
    success_axis.axvline(report["rtc_max_delay"], color="gray", linestyle="--", linewidth=1)
    discontinuity_axis.axvline(report["rtc_max_delay"], color="gray", linestyle="--", linewidth=1)
    for axis, title in ((success_axis, "Success"), (discontinuity_axis, "Chunk-boundary discontinuity")):
        axis.set_title(title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # delays are whole control steps
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(f"{report['task']}: {len(report['seeds'])} episodes per point (dashed: rtc_max_delay)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(report: dict[str, Any], output_dir: Path) -> str:
    """Writes delay_sweep.{json,md,png} and returns the markdown table."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "delay_sweep.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    (output_dir / "delay_sweep.md").write_text(table)
    plot_sweep(report, output_dir / "delay_sweep.png")
    return table


def parse_delays(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", type=Path, help="a pretrained_model folder (config, weights, processors)"
    )
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--episodes", type=int, default=5, help="episodes per (mode, delay)")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first episode seed")
    parser.add_argument("--max-steps", type=int, default=200, help="step cap per episode (env limit: 500)")
    parser.add_argument("--modes", nargs="+", choices=RTC_INFERENCE_MODES, default=list(RTC_INFERENCE_MODES))
    parser.add_argument(
        "--delays",
        type=parse_delays,
        default=None,
        help="comma-separated candidate delays, e.g. 0,2,4,8 (default: all valid per mode)",
    )
    parser.add_argument("--device", default="cpu")
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
    )
    print(write_report(report, args.output_dir))
    print(f"Wrote delay_sweep.json, .md and .png to {args.output_dir}")


if __name__ == "__main__":
    main()
