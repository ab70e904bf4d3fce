"""Closed-loop evidence study in MetaWorld (state observations): does prefix conditioning and all-delays
training pay off when inference takes `d` control steps?

For every task and demonstration condition (unimodal: the scripted expert; multimodal: a random detour left
or right first, see `metaworld_state`), every variant is trained from scratch on the same demonstrations,
with the same seeds and batches, then evaluated in closed loop:

- `act`: LeRobot's ACT. Plain chunking: `discard` at every delay (the next chunk ignores the `d` actions
  still executing and its first `d` actions are dropped), and temporal ensembling at delay 0 as a reference.
- `off`: this policy with `rtc_train_all_delays=false` (one random delay per sample).
- `on`: `rtc_train_all_delays=true` (every delay of every sample, by batch expansion).
- `shared`: `on` with `rtc_prefix_attention=shared_observation`.

The RTC variants are evaluated in both `prefix` and `discard` mode (`rtc_inference_mode`). At delay 0 a new
chunk is requested only once the previous one is used up, so both modes run the same code and one
evaluation serves both rows.

Two training budgets:
- equal steps: every variant trains `--steps` steps;
- equal wall-clock: every variant trains for the time `off` needs for `--steps` steps. The time per step of
  each variant comes from ONE interleaved calibration run at the start (a few steps of each variant in
  turn, repeated; medians), so a drifting load on a shared machine hits every variant alike; a variant's
  equal-time steps are `--steps * t(off) / t(variant)`. Variants whose equal-time steps equal their
  equal-steps steps reuse that run.

Evaluation runs through LeRobot's own `rollout` with a `SyncVectorEnv` of state envs: one batched policy
call per control step for all episodes of a cell. Episodes of all cells use the same env seeds (from
`--eval-seed`, never used for demonstrations: those start at 0); training seed `k` gets its own block of
env seeds, and a cell pools the episodes of every training seed. Because all envs of a rollout reset
together, chunks start at the same steps in every env: every `n_action_steps` steps from step 0 (also under
a delay, in both modes), which is what the discontinuity measure uses.

Per cell: successes with a Wilson 95% interval, chunk-join discontinuity (mean jump at a chunk switch over
the mean step-to-step change inside chunks, per episode: mean, std and pooled), and per-seed figures.
Writes `summary.json` (a list of rows), `summary.md`, `study_meta.json`, `episodes_<task>.jsonl` (every
episode, appended as the study runs, so a partial run is usable; `--report-only` rebuilds the summary from
them) and PNG plots to `--output-dir`.
"""

import argparse
import gzip
import json
import math
import multiprocessing
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.envs.metaworld import MetaworldEnv
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.scripts.lerobot_eval import rollout
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from torch import Tensor, nn

from ..configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from ..modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from .ab_compare import RTC_VARIANTS, VARIANT_DESCRIPTIONS
from .continuity import chunk_switch_changes, discontinuity_ratio
from .delay_sweep import set_inference_delay
from .interleave import rotated
from .metaworld_demos import default_to_headless_rendering
from .metaworld_state import DEMO_CONDITIONS, Demo, MetaworldStateEnv, record_demos, state_features
from .policy_sizes import STATE_STUDY
from .report import markdown_table, write_report

ACTION_IS_PAD = "action_is_pad"
VARIANTS = ("act", *RTC_VARIANTS)  # act, off, on, shared
DESCRIPTIONS = {"act": "LeRobot's ACT (plain chunking)", **VARIANT_DESCRIPTIONS}
BUDGET_REFERENCE = "off"  # equal wall-clock = the time this variant needs for the equal-steps run
TEMPORAL_ENSEMBLE = "temporal_ensemble"
TEMPORAL_ENSEMBLE_COEFF = 0.01  # ACT's published value
# Both have a grasping phase and a placing or striking phase; hammer-v3 is where LeRobot's ACT lost most
# success to discard at delay 8 in a pre-study probe.
DEFAULT_TASKS = ("hammer-v3", "assembly-v3")
DEFAULT_EVAL_SEED = 100_000
STD_FLOOR = 0.01  # 1 cm for positions; actions and gripper values are of order 1
DEMO_MAX_STEPS = 300  # the experts need at most ~270 steps on the candidate tasks

@dataclass
class StudySettings:
    name: str = "metaworld_state_study"
    tasks: Sequence[str] = DEFAULT_TASKS
    demos: Sequence[str] = DEMO_CONDITIONS
    variants: Sequence[str] = VARIANTS
    delays: Sequence[int] = (0, 4, 8)
    train_seeds: Sequence[int] = (0, 1, 2)
    demo_episodes: int = 40
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    chunk_size: int = 18
    n_action_steps: int = 9
    rtc_max_delay: int = 8
    episodes_per_seed: int = 34
    max_steps: int = 150
    eval_seed: int = DEFAULT_EVAL_SEED
    calibration_rounds: int = 5
    calibration_steps: int = 5
    equal_time: bool = True
    workers: int = 1
    output_dir: Path = Path("results/metaworld_state_study")
    command: str = ""

    def check(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown variants {unknown}: choose among {list(VARIANTS)}.")
        if BUDGET_REFERENCE not in self.variants and self.equal_time:
            raise ValueError(
                f"The equal wall-clock budget is the time of '{BUDGET_REFERENCE}': include it in --variants "
                "or pass --no-equal-time."
            )
        unknown = sorted(set(self.demos) - set(DEMO_CONDITIONS))
        if unknown:
            raise ValueError(f"Unknown demo conditions {unknown}: choose among {list(DEMO_CONDITIONS)}.")
        largest = max(self.delays)
        if largest > self.rtc_max_delay:
            raise ValueError(
                f"Delays {list(self.delays)} exceed rtc_max_delay={self.rtc_max_delay}: prefix mode is only "
                "trained up to rtc_max_delay. Raise --rtc-max-delay or drop the larger delays."
            )
        if largest + self.n_action_steps > self.chunk_size or largest >= self.n_action_steps:
            raise ValueError(
                f"Discard mode at delay {largest} needs delay + n_action_steps <= chunk_size and "
                f"delay < n_action_steps, got n_action_steps={self.n_action_steps}, "
                f"chunk_size={self.chunk_size}. Raise --chunk-size or lower the delays."
            )


def quick_settings(output_dir: Path) -> StudySettings:
    """A structurally complete study in well under a minute: tiny data, steps and episode counts."""
    return StudySettings(
        name="quick",
        tasks=DEFAULT_TASKS[:1],
        delays=(0, 2),
        train_seeds=(0,),
        demo_episodes=2,
        steps=4,
        batch_size=8,
        chunk_size=8,
        n_action_steps=4,
        rtc_max_delay=2,
        episodes_per_seed=2,
        max_steps=12,
        calibration_rounds=1,
        calibration_steps=1,
        output_dir=output_dir,
    )


# ---- statistics ------------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default), from the counts."""
    if n <= 0:
        raise ValueError(f"A Wilson interval needs at least one trial, got n={n}.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n={n}, got {successes}.")
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


# ---- policies --------------------------------------------------------------------------------------------
def policy_config(variant: str, settings: StudySettings) -> PreTrainedConfig:
    inputs, outputs = state_features()
    shared = dict(
        device="cpu",
        push_to_hub=False,
        # Every input normalized, the same way for every variant: MetaWorld's coordinates vary by a few
        # centimetres around offsets of up to a metre, which a raw input layer learns slowly.
        normalization_mapping={kind: NormalizationMode.MEAN_STD for kind in ("STATE", "ENV", "ACTION")},
        input_features=inputs,
        output_features=outputs,
        chunk_size=settings.chunk_size,
        n_action_steps=settings.n_action_steps,
        optimizer_lr=settings.lr,
        optimizer_lr_backbone=settings.lr,
        **STATE_STUDY,
    )
    if variant == "act":
        return ACTConfig(**shared)
    # MetaWorld's actions are end-effector deltas, not positions in the state's space: absolute actions.
    return ACTRelativeRTCAllDelaysConfig(
        **shared, **RTC_VARIANTS[variant], rtc_max_delay=settings.rtc_max_delay,
        predict_relative_actions=False,
    )


def new_policy(config: PreTrainedConfig, seed: int) -> PreTrainedPolicy:
    """Seeded right before creation: the RTC variants share their parameters, so a seed gives them the
    same initial weights."""
    torch.manual_seed(seed)
    policy_class = ACTPolicy if isinstance(config, ACTConfig) else ACTRelativeRTCAllDelaysPolicy
    return policy_class(config)


class DelayedChunking(nn.Module):
    """Plain chunking under an inference delay for a policy without one (LeRobot's ACT): the schedule of
    this plugin's `select_action` in `discard` mode. Each chunk contributes `n_action_steps` actions; when
    `delay` of them remain, the next chunk is predicted from the current observation and its first `delay`
    actions are dropped (they correspond to the steps that pass while it is computed)."""

    def __init__(self, policy: PreTrainedPolicy, delay: int, n_action_steps: int):
        super().__init__()
        chunk_size = policy.config.chunk_size
        if not 0 <= delay < n_action_steps or delay + n_action_steps > chunk_size:
            raise ValueError(
                f"Discard at delay {delay} needs 0 <= delay < n_action_steps ({n_action_steps}) and delay + "
                f"n_action_steps <= chunk_size ({chunk_size})."
            )
        self.policy, self.delay, self.n_action_steps = policy, delay, n_action_steps
        self.config = policy.config
        self._queue: deque[Tensor] = deque()

    def reset(self) -> None:
        self.policy.reset()
        self._queue.clear()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor]) -> Tensor:
        if not self._queue:
            chunk = self.policy.predict_action_chunk(batch)[:, : self.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))
        elif len(self._queue) == self.delay:
            chunk = self.policy.predict_action_chunk(batch)[:, self.delay : self.delay + self.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))
        return self._queue.popleft()


def temporal_ensemble_act(policy: ACTPolicy) -> ACTPolicy:
    """The same trained ACT weights, run with temporal ensembling (a chunk every step, n_action_steps=1)."""
    config = replace(policy.config, temporal_ensemble_coeff=TEMPORAL_ENSEMBLE_COEFF, n_action_steps=1)
    ensembled = ACTPolicy(config)
    ensembled.load_state_dict(policy.state_dict())
    return ensembled.eval()


def evaluated_policy(policy: PreTrainedPolicy, mode: str, delay: int) -> nn.Module:
    """The module whose `select_action` runs `mode` at `delay` (the policy itself, reconfigured, when it
    emulates delays itself)."""
    if isinstance(policy, ACTPolicy):
        if mode == TEMPORAL_ENSEMBLE:
            return temporal_ensemble_act(policy)
        if mode != "discard":
            raise ValueError(f"LeRobot's ACT has no action prefix: only discard mode, got '{mode}'.")
        return policy if delay == 0 else DelayedChunking(policy, delay, policy.config.n_action_steps)
    set_inference_delay(policy.config, mode, delay)
    return policy


def eval_settings(variant: str, delays: Sequence[int]) -> list[tuple[str, int]]:
    """The (mode, delay) pairs evaluated for a variant; delay 0 once for the RTC variants (both modes run
    the same code there)."""
    if variant == "act":
        return [(TEMPORAL_ENSEMBLE, 0)] + [("discard", d) for d in delays]
    return [("prefix", d) for d in delays] + [("discard", d) for d in delays if d > 0]


# ---- data and training -----------------------------------------------------------------------------------
def demo_stats(demos: Sequence[Demo]) -> dict[str, dict[str, np.ndarray]]:
    """Per-feature statistics over all frames, as LeRobot computes dataset stats, with the standard
    deviation floored at `STD_FLOOR`: a coordinate that barely moves in the demonstrations (an object at
    rest) must not turn a millimetre at evaluation into a huge normalized input."""
    columns = {
        OBS_STATE: np.concatenate([d.state for d in demos]),
        OBS_ENV_STATE: np.concatenate([d.env_state for d in demos]),
        ACTION: np.concatenate([d.action for d in demos]),
    }
    return {
        key: {
            "mean": v.mean(0),
            "std": np.maximum(v.std(0), STD_FLOOR),
            "min": v.min(0),
            "max": v.max(0),
            "count": np.array([len(v)]),
        }
        for key, v in columns.items()
    }


def training_windows(demos: Sequence[Demo], action_offsets: Sequence[int]) -> dict[str, Tensor]:
    """Every frame of every demo with its action window at `action_offsets` (the config's
    `action_delta_indices`). As LeRobotDataset does, indices past the episode's end repeat its last action
    and are flagged in `action_is_pad`."""
    offsets = np.asarray(action_offsets)
    states, env_states, actions, pads = [], [], [], []
    for demo in demos:
        index = np.arange(demo.length)[:, None] + offsets[None, :]
        pads.append((index < 0) | (index >= demo.length))
        actions.append(demo.action[index.clip(0, demo.length - 1)])
        states.append(demo.state)
        env_states.append(demo.env_state)
    return {
        OBS_STATE: torch.from_numpy(np.concatenate(states)),
        OBS_ENV_STATE: torch.from_numpy(np.concatenate(env_states)),
        ACTION: torch.from_numpy(np.concatenate(actions)),
        ACTION_IS_PAD: torch.from_numpy(np.concatenate(pads)),
    }


@dataclass
class TrainingData:
    """Normalized training windows and the processors, per policy kind (ACT and the RTC variants differ in
    their action windows and normalization)."""

    stats: dict[str, dict[str, np.ndarray]]
    demos: Sequence[Demo]
    cache: dict[str, tuple[dict[str, Tensor], Any, Any]] = field(default_factory=dict)

    def get(self, config: PreTrainedConfig) -> tuple[dict[str, Tensor], Any, Any]:
        kind = "act" if isinstance(config, ACTConfig) else "rtc"
        if kind not in self.cache:
            preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=self.stats)
            windows = training_windows(self.demos, config.action_delta_indices)
            normalized = preprocessor(windows)
            self.cache[kind] = ({key: normalized[key] for key in windows}, preprocessor, postprocessor)
        return self.cache[kind]


class Trainer:
    """The study's training loop for one variant and seed: LeRobot's policy forward, the policy's AdamW
    preset and gradient clipping, batches drawn from a generator seeded like the policy, so every variant of
    a seed sees the same batches."""

    def __init__(self, variant: str, seed: int, settings: StudySettings, data: TrainingData):
        self.config = policy_config(variant, settings)
        self.policy = new_policy(self.config, seed)
        self.windows, self.preprocessor, self.postprocessor = data.get(self.config)
        optimizer_config = self.config.get_optimizer_preset()
        self.optimizer = optimizer_config.build(self.policy.get_optim_params())
        self.grad_clip_norm = optimizer_config.grad_clip_norm
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size = settings.batch_size
        self.steps = 0
        self.seconds = 0.0
        self.last_loss = float("nan")

    def train(self, steps: int) -> None:
        self.policy.train()
        n_frames = len(self.windows[ACTION])
        start = time.perf_counter()
        for _ in range(steps):
            index = torch.randint(n_frames, (self.batch_size,), generator=self.generator)
            loss, _ = self.policy.forward({key: value[index] for key, value in self.windows.items()})
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip_norm)
            self.optimizer.step()
        self.last_loss = float(loss.item()) if steps else self.last_loss
        self.seconds += time.perf_counter() - start
        self.steps += steps
        self.policy.eval()


def calibrate(settings: StudySettings, data: TrainingData) -> dict[str, float]:
    """Seconds per training step of each variant, from one interleaved run: `calibration_steps` steps of
    each variant in turn, `calibration_rounds` times (after one warm-up round); the median per variant."""
    trainers = {variant: Trainer(variant, 0, settings, data) for variant in settings.variants}
    for trainer in trainers.values():
        trainer.train(1)  # warm-up: allocations and first-call overheads
    times: dict[str, list[float]] = {variant: [] for variant in trainers}
    for round_index in range(settings.calibration_rounds):
        for variant in rotated(list(trainers), round_index):
            trainer = trainers[variant]
            before = trainer.seconds
            trainer.train(settings.calibration_steps)
            times[variant].append((trainer.seconds - before) / settings.calibration_steps)
    return {variant: float(np.median(values)) for variant, values in times.items()}


def equal_time_steps(settings: StudySettings, seconds_per_step: dict[str, float]) -> dict[str, int]:
    """Steps per variant that fit the reference variant's equal-steps time."""
    budget = settings.steps * seconds_per_step[BUDGET_REFERENCE]
    return {v: max(1, round(budget / seconds_per_step[v])) for v in settings.variants}


# ---- evaluation ------------------------------------------------------------------------------------------
def make_vector_env(task: str, n_envs: int, max_steps: int):
    """A vector env of state envs; with LeRobot 0.6's `freeze_after_episode_end`, a finished episode stops
    costing simulation while the others run on (the rollout ignores its further steps either way)."""
    import gymnasium as gym

    try:
        from lerobot.envs.utils import freeze_after_episode_end
    except ImportError:  # LeRobot 0.4: its rollout cannot thaw frozen envs, so no freezing there
        def freeze_after_episode_end(make):
            return make

    def make() -> MetaworldStateEnv:
        return MetaworldStateEnv(task, max_steps)

    return gym.vector.SyncVectorEnv([freeze_after_episode_end(make) for _ in range(n_envs)])


def run_episodes(
    vector_env,
    policy: nn.Module,
    preprocessor,
    postprocessor,
    env_processors: tuple,
    seeds: list[int],
    n_action_steps: int | None,
) -> list[dict[str, Any]]:
    """One rollout of `len(seeds)` episodes through LeRobot's `rollout`. Returns per episode: seed, success,
    steps and the chunk-join measures (chunks start every `n_action_steps` steps; None: every step, as in
    temporal ensembling, so there are no joins)."""
    env_preprocessor, env_postprocessor = env_processors
    start = time.perf_counter()
    with torch.no_grad():
        result = rollout(
            vector_env, policy, env_preprocessor, env_postprocessor, preprocessor, postprocessor, seeds=seeds
        )
    seconds_per_episode = (time.perf_counter() - start) / len(seeds)
    done = result["done"]
    n_total = done.shape[1]
    last = torch.where(done.any(1), done.int().argmax(1), torch.full((len(seeds),), n_total - 1))
    within = torch.arange(n_total)[None, :] <= last[:, None]
    successes = (result["success"] & within).any(1)
    episodes = []
    for i, seed in enumerate(seeds):
        actions = result[ACTION][i, : int(last[i]) + 1].numpy()
        record: dict[str, Any] = {
            "seed": seed,
            "success": bool(successes[i]),
            "steps": len(actions),
            "rollout_seconds": seconds_per_episode,  # the rollout's wall-clock, shared by its episodes
        }
        if n_action_steps is None:
            record.update(n_switches=0, jump_mean=None, inside_mean=None, discontinuity=None)
        else:
            jumps, inside = chunk_switch_changes(actions, range(0, len(actions), n_action_steps))
            record.update(
                n_switches=len(jumps),
                jump_mean=float(jumps.mean()) if len(jumps) else None,
                inside_mean=float(inside.mean()) if len(inside) else None,
                discontinuity=discontinuity_ratio(jumps, inside),
                # Enough to pool the cell's ratio later, without storing every step's change.
                jumps=[round(float(j), 6) for j in jumps],
                inside_sum=float(inside.sum()),
                inside_count=len(inside),
            )
        episodes.append(record)
    return episodes


# ---- summary ---------------------------------------------------------------------------------------------
CELL_KEYS = ("budget", "task", "demos", "variant", "mode", "delay")


def summarize(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell (budget, task, demos, variant, mode, delay), pooling its training seeds."""
    cells: dict[tuple, list[dict]] = {}
    for episode in episodes:
        cells.setdefault(tuple(episode[k] for k in CELL_KEYS), []).append(episode)
    rows = []
    for key, group in cells.items():
        n, successes = len(group), sum(e["success"] for e in group)
        low, high = wilson_interval(successes, n)
        ratios = [e["discontinuity"] for e in group if e["discontinuity"] is not None]
        jumps = [j for e in group for j in e.get("jumps", [])]
        inside_count = sum(e.get("inside_count", 0) for e in group)
        inside_mean = sum(e.get("inside_sum", 0.0) for e in group) / inside_count if inside_count else None
        per_seed = []
        for seed in sorted({e["train_seed"] for e in group}):
            seed_group = [e for e in group if e["train_seed"] == seed]
            seed_ratios = [e["discontinuity"] for e in seed_group if e["discontinuity"] is not None]
            per_seed.append(
                {
                    "train_seed": seed,
                    "train_steps": seed_group[0]["train_steps"],
                    "train_seconds": seed_group[0]["train_seconds"],
                    "episodes": len(seed_group),
                    "successes": sum(e["success"] for e in seed_group),
                    "discontinuity_mean": float(np.mean(seed_ratios)) if seed_ratios else None,
                }
            )
        rows.append(
            {
                **dict(zip(CELL_KEYS, key, strict=True)),
                "train_seeds": [s["train_seed"] for s in per_seed],
                "train_steps": [s["train_steps"] for s in per_seed],
                "episodes": n,
                "successes": successes,
                "success_rate": successes / n,
                "ci95_low": low,
                "ci95_high": high,
                "discontinuity_mean": float(np.mean(ratios)) if ratios else None,
                "discontinuity_std": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else None,
                "discontinuity_pooled": (
                    float(np.mean(jumps)) / inside_mean if jumps and inside_mean else None
                ),
                "jump_mean": float(np.mean(jumps)) if jumps else None,
                "mean_steps": float(np.mean([e["steps"] for e in group])),
                "per_seed": per_seed,
            }
        )
    return rows


def expand_delay_zero(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds the discard row at delay 0 of each RTC variant: the same episodes as prefix at delay 0."""
    extra = []
    for row in rows:
        if row["variant"] != "act" and row["mode"] == "prefix" and row["delay"] == 0:
            extra.append({**row, "mode": "discard", "same_episodes_as": "prefix, delay 0"})
    return sorted(rows + extra, key=row_order)


def row_order(row: dict[str, Any]) -> tuple:
    modes = ("prefix", "discard", TEMPORAL_ENSEMBLE)
    return (
        row["budget"] != "equal_steps",
        row["task"],
        row["demos"],
        VARIANTS.index(row["variant"]),
        modes.index(row["mode"]),
        row["delay"],
    )


def success_cell(row: dict[str, Any]) -> str:
    return f"{row['successes']}/{row['episodes']} ({row['ci95_low']:.2f}-{row['ci95_high']:.2f})"


def study_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# {meta['settings']['name']}",
        "",
        f"Command: `{meta['settings']['command']}`",
        "",
        f"Wall-clock: {meta.get('wall_clock_minutes', float('nan')):.1f} min ({meta.get('status', '')}). "
        "Seconds per training step (interleaved calibration): "
        + ", ".join(f"{v} {t * 1000:.1f} ms" for v, t in meta["seconds_per_step"].items())
        + f". Evaluation: {meta['evaluated_episodes']} episodes at "
        f"{meta['episodes_per_rollout_minute'] or float('nan'):.0f} episodes per minute of rollout. "
        + "Equal wall-clock steps: "
        + ", ".join(f"{v} {s}" for v, s in meta["equal_time_steps"].items())
        + ".",
        "",
        "Success: successes/episodes (Wilson 95% interval). Discontinuity: mean over episodes of (mean "
        "action jump at a chunk switch / mean step-to-step change inside chunks); 1 = joins as smooth as the "
        "motion. "
        "Per seed: successes per training seed.",
        "",
    ]
    headers = ["budget", "task", "demos", "variant", "mode", "delay", "success (95% CI)", "discontinuity",
               "(std)", "per seed"]
    table = [
        [
            r["budget"], r["task"], r["demos"], r["variant"], r["mode"], r["delay"], success_cell(r),
            r["discontinuity_mean"], r["discontinuity_std"],
            " ".join(str(s["successes"]) for s in r["per_seed"]),
        ]
        for r in rows
    ]
    return "\n".join(lines) + "\n" + markdown_table(headers, table) + "\n"


def plot_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per budget: success and discontinuity vs delay, one panel column per (task, demos), one
    line per (variant, mode)."""
    figures = {}
    for budget in dict.fromkeys(r["budget"] for r in rows):
        subset = [r for r in rows if r["budget"] == budget]
        groups = list(dict.fromkeys((r["task"], r["demos"]) for r in subset))

        def draw(plt, subset=subset, groups=groups, budget=budget):
            figure, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7), squeeze=False)
            for column, (task, demos) in enumerate(groups):
                cells = [r for r in subset if r["task"] == task and r["demos"] == demos]
                lines = list(dict.fromkeys((r["variant"], r["mode"]) for r in cells))
                all_delays = sorted({r["delay"] for r in cells})
                dodge = 0.015 * max(max(all_delays), 1)  # side by side, so that the error bars stay legible
                for index, (variant, mode) in enumerate(lines):
                    line = [r for r in cells if r["variant"] == variant and r["mode"] == mode]
                    delays = [r["delay"] + (index - (len(lines) - 1) / 2) * dodge for r in line]
                    label = f"{variant} {mode}"
                    style = dict(marker="o" if mode != "discard" else "x", linestyle="-" if mode == "prefix"
                                 else "--", label=label)
                    if mode == TEMPORAL_ENSEMBLE:
                        style.update(marker="*", linestyle="none", markersize=10)
                    rates = np.array([r["success_rate"] for r in line])
                    # Clipped at 0: at 0 or n successes the interval's edge equals the rate up to rounding.
                    errors = np.array([[r["success_rate"] - r["ci95_low"] for r in line],
                                       [r["ci95_high"] - r["success_rate"] for r in line]]).clip(min=0)
                    axes[0, column].errorbar(delays, rates, yerr=errors, capsize=2, **style)
                    axes[1, column].plot(
                        delays, [np.nan if r["discontinuity_mean"] is None else r["discontinuity_mean"]
                                 for r in line], **style)
                axes[0, column].set(title=f"{task}, {demos}", xlabel="delay (steps)", ylabel="success",
                                    ylim=(-0.05, 1.05), xticks=all_delays)
                axes[1, column].set(xlabel="delay (steps)", ylabel="discontinuity", ylim=(0, None),
                                    xticks=all_delays)
                axes[1, column].axhline(1.0, color="gray", linestyle=":", linewidth=1)
            axes[0, 0].legend(fontsize=7)
            figure.suptitle(f"{budget.replace('_', ' ')}: success (Wilson 95%) and chunk-join discontinuity")
            figure.tight_layout()
            return figure

        figures[f"{budget}_success_discontinuity"] = draw
    return figures


def write_outputs(
    episodes: list[dict[str, Any]], meta: dict[str, Any], output_dir: Path, figures: bool = True
) -> list[dict]:
    """summary.json (the rows), summary.md, study_meta.json and, with `figures`, the PNG plots."""
    rows = expand_delay_zero(summarize(episodes))
    # A run that serves both budgets is listed under each: count its episodes once.
    run_keys = ("task", "demos", "variant", "train_seed", "train_steps", "mode", "delay", "seed")
    unique = {tuple(e[k] for k in run_keys): e for e in episodes}
    rollout_minutes = sum(e["rollout_seconds"] for e in unique.values()) / 60
    meta["evaluated_episodes"] = len(unique)
    meta["episodes_per_rollout_minute"] = len(unique) / rollout_minutes if rollout_minutes else None
    markdown = study_markdown(rows, meta)
    write_report(output_dir, "summary", rows, markdown, plot_figures(rows) if figures else None)
    (output_dir / "study_meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return rows


# ---- the study -------------------------------------------------------------------------------------------
def run_study(settings: StudySettings, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs the whole study. Every trained model's episodes are appended to `episodes_<task>.jsonl` at once
    and the summary is rewritten regularly, so a partial run is usable. With `workers > 1` the tasks run
    in parallel processes (after the one shared calibration)."""
    settings.check()
    start = time.perf_counter()
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for task in settings.tasks:
        episodes_file(out, task).write_text("")
    meta: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "study_size": STATE_STUDY,
        "variants": {v: DESCRIPTIONS[v] for v in settings.variants},
        "python": platform.python_version(),
        "lerobot": _lerobot_version(),
        "torch_threads": torch.get_num_threads(),
        "status": "running",
    }
    first_task, first_demos = settings.tasks[0], settings.demos[0]
    demos = record_demos(first_task, settings.demo_episodes, first_demos, max_steps=DEMO_MAX_STEPS)
    meta["seconds_per_step"] = calibrate(settings, TrainingData(demo_stats(demos), demos))
    meta["equal_time_steps"] = (
        equal_time_steps(settings, meta["seconds_per_step"]) if settings.equal_time else {}
    )
    log(f"[{_minutes(start)}] calibration (ms/step): "
        f"{ {v: round(t * 1000, 1) for v, t in meta['seconds_per_step'].items()} }; equal wall-clock steps: "
        f"{meta['equal_time_steps']}")

    def update(status: str) -> list[dict[str, Any]]:
        meta["wall_clock_minutes"] = (time.perf_counter() - start) / 60
        meta["status"] = status
        episodes = [json.loads(line) for task in settings.tasks for line in episodes_file(out, task).open()]
        # Plotting costs seconds: only the final summary draws the figures.
        return write_outputs(episodes, meta, out, figures=status == "complete") if episodes else []

    if settings.workers > 1 and len(settings.tasks) > 1:
        context = multiprocessing.get_context("spawn")  # fresh MuJoCo and torch state in each worker
        with context.Pool(min(settings.workers, len(settings.tasks))) as pool:
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
            run_task(settings, task, meta["equal_time_steps"], start, log, on_model=lambda: update("running"))
    rows = update("complete")
    log(f"[{_minutes(start)}] done: {len(rows)} rows in {out}")
    return rows


def episodes_file(output_dir: Path, task: str) -> Path:
    return output_dir / f"episodes_{task}.jsonl"


def run_task(
    settings: StudySettings,
    task: str,
    time_steps_by_variant: dict[str, int],
    start: float,
    log: Callable[[str], None] | None = None,
    on_model: Callable[[], Any] | None = None,
) -> None:
    """Every demo condition, training seed and variant of one task; appends each trained model's episodes
    to the task's episodes file."""
    log = log or print_now
    n_eval = settings.episodes_per_seed
    vector_env = make_vector_env(task, n_eval, settings.max_steps)
    env_processors = make_env_pre_post_processors(MetaworldEnvConfig(task=task), None)
    try:
        for demos_condition in settings.demos:
            t0 = time.perf_counter()
            demos = record_demos(task, settings.demo_episodes, demos_condition, max_steps=DEMO_MAX_STEPS)
            data = TrainingData(demo_stats(demos), demos)
            log(f"[{_minutes(start)}] {task} {demos_condition}: {len(demos)} demos "
                f"({sum(d.length for d in demos)} frames) in {time.perf_counter() - t0:.1f}s")
            for index, train_seed in enumerate(settings.train_seeds):
                seeds = [settings.eval_seed + index * n_eval + i for i in range(n_eval)]
                # Rotating the order spreads a drifting machine load over all variants.
                for variant in rotated(list(settings.variants), index):
                    for steps, budgets in training_runs(settings, time_steps_by_variant.get(variant)):
                        trainer = Trainer(variant, train_seed, settings, data)
                        trainer.train(steps)
                        new = evaluate_model(trainer, vector_env, env_processors, seeds, settings)
                        labels = dict(task=task, demos=demos_condition, variant=variant,
                                      train_seed=train_seed, train_steps=steps,
                                      train_seconds=trainer.seconds, train_loss=trainer.last_loss)
                        with episodes_file(settings.output_dir, task).open("a") as f:
                            for budget in budgets:
                                for record in new:
                                    f.write(json.dumps({**record, **labels, "budget": budget}) + "\n")
                        log(f"[{_minutes(start)}] {task} {demos_condition} seed {train_seed} {variant} "
                            f"{'+'.join(budgets)}: {steps} steps in {trainer.seconds:.1f}s (loss "
                            f"{trainer.last_loss:.3f}); successes {success_counts(new)}")
                        if on_model is not None:
                            on_model()
    finally:
        vector_env.close()


def training_runs(settings: StudySettings, time_steps: int | None) -> list[tuple[int, list[str]]]:
    """(steps, budgets) per training of a variant: one run serves both budgets when its equal wall-clock
    steps are the equal-steps steps."""
    if not settings.equal_time or time_steps is None:
        return [(settings.steps, ["equal_steps"])]
    if time_steps == settings.steps:
        return [(settings.steps, ["equal_steps", "equal_time"])]
    return [(settings.steps, ["equal_steps"]), (time_steps, ["equal_time"])]


def evaluate_model(
    trainer: Trainer, vector_env, env_processors: tuple, seeds: list[int], settings: StudySettings
) -> list[dict[str, Any]]:
    """Every (mode, delay) of the trained model on the same env seeds."""
    variant = "act" if isinstance(trainer.policy, ACTPolicy) else "rtc"
    records = []
    for mode, delay in eval_settings(variant, settings.delays):
        policy = evaluated_policy(trainer.policy, mode, delay)
        chunk_every = None if mode == TEMPORAL_ENSEMBLE else settings.n_action_steps
        processors = (trainer.preprocessor, trainer.postprocessor)
        for episode in run_episodes(vector_env, policy, *processors, env_processors, seeds, chunk_every):
            records.append({**episode, "mode": mode, "delay": delay})
    return records


def success_counts(records: list[dict[str, Any]]) -> str:
    counts: dict[tuple[str, int], list[bool]] = {}
    for record in records:
        counts.setdefault((record["mode"], record["delay"]), []).append(record["success"])
    return " ".join(f"{mode} {delay}: {sum(v)}/{len(v)}," for (mode, delay), v in counts.items()).rstrip(",")


def rewrite_report(output_dir: Path) -> list[dict[str, Any]]:
    """The summary and plots again, from a (possibly partial) run's episodes files (plain, or gzipped for
    storage) and metadata."""
    meta_path = output_dir / "study_meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"No study_meta.json in {output_dir}: point --output-dir at the outputs of a study."
        )
    meta = json.loads(meta_path.read_text())
    paths = sorted(output_dir.glob("episodes_*.jsonl")) + sorted(output_dir.glob("episodes_*.jsonl.gz"))
    episodes = [
        json.loads(line)
        for path in paths
        for line in (gzip.open(path, "rt") if path.suffix == ".gz" else path.open())
    ]
    return write_outputs(episodes, meta, output_dir)


def env_step_seconds(task: str, steps: int = 100) -> dict[str, float]:
    """Seconds per control step, without a policy, of LeRobot's own MetaWorld env as `lerobot-eval
    --env.type=metaworld` builds it (a 480x480 frame rendered every step) and of the state env."""
    default_to_headless_rendering()
    image_env = MetaworldEnv(task=task, **MetaworldEnvConfig(task=task).gym_kwargs)
    state_env = MetaworldStateEnv(task, max_steps=steps)
    timings = {}
    try:
        for name, env in (("image", image_env), ("state", state_env)):
            env.reset(seed=0)
            action = np.zeros(4, dtype=np.float32)
            start = time.perf_counter()
            for _ in range(steps):
                env.step(action)
            timings[name] = (time.perf_counter() - start) / steps
    finally:
        image_env.close()
        state_env.close()
    return timings


def print_now(message: str) -> None:
    print(message, flush=True)


def _minutes(start: float) -> str:
    return f"{(time.perf_counter() - start) / 60:5.1f} min"


def _lerobot_version() -> str:
    from importlib.metadata import version

    return version("lerobot")


def parse_args(argv: list[str] | None) -> StudySettings:
    defaults = StudySettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny, structurally complete run (< 1 min)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite summary.json/.md and the plots from the episodes files of --output-dir and exit",
    )
    parser.add_argument(
        "--env-step-times",
        action="store_true",
        help="only measure the env step time with and without rendering (on the first task) and exit",
    )
    parser.add_argument("--name", default=defaults.name)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: results/<name>")
    parser.add_argument("--tasks", nargs="+", default=list(defaults.tasks))
    parser.add_argument("--demos", nargs="+", choices=DEMO_CONDITIONS, default=list(defaults.demos))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(defaults.variants))
    parser.add_argument("--delays", type=int, nargs="+", default=list(defaults.delays))
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(defaults.train_seeds))
    parser.add_argument("--demo-episodes", type=int, default=defaults.demo_episodes)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="equal-steps training steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size)
    parser.add_argument("--n-action-steps", type=int, default=defaults.n_action_steps)
    parser.add_argument("--rtc-max-delay", type=int, default=defaults.rtc_max_delay)
    parser.add_argument("--episodes-per-seed", type=int, default=defaults.episodes_per_seed,
                        help="evaluation episodes per cell and training seed")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="episode step cap")
    parser.add_argument("--eval-seed", type=int, default=defaults.eval_seed)
    parser.add_argument("--no-equal-time", action="store_true", help="skip the equal wall-clock budget")
    parser.add_argument("--workers", type=int, default=1, help="tasks run in parallel processes")
    args = parser.parse_args(argv)
    command = "act-rtc-alldelays-study " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        rewrite_report(args.output_dir or Path("results") / args.name)
        sys.exit(0)
    if args.env_step_times:
        for name, seconds in env_step_seconds(args.tasks[0]).items():
            print(f"{args.tasks[0]} {name} env: {seconds * 1000:.2f} ms per step")
        sys.exit(0)
    if args.quick:
        settings = quick_settings(args.output_dir or Path("results/quick"))
        return replace(settings, command=command.strip())
    return StudySettings(
        name=args.name,
        tasks=args.tasks,
        demos=args.demos,
        variants=[v for v in VARIANTS if v in args.variants],
        delays=sorted(set(args.delays)),
        train_seeds=args.train_seeds,
        demo_episodes=args.demo_episodes,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        chunk_size=args.chunk_size,
        n_action_steps=args.n_action_steps,
        rtc_max_delay=args.rtc_max_delay,
        episodes_per_seed=args.episodes_per_seed,
        max_steps=args.max_steps,
        eval_seed=args.eval_seed,
        equal_time=not args.no_equal_time,
        workers=args.workers,
        output_dir=args.output_dir or Path("results") / args.name,
        command=command.strip(),
    )


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    run_study(settings, log=print_now)
    print(f"Wrote summary.json, summary.md, episodes_<task>.jsonl and PNG plots to {settings.output_dir}")


if __name__ == "__main__":
    main()
