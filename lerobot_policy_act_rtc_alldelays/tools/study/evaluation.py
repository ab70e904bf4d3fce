"""Closed-loop evaluation: chunking schedules under a delay, LeRobot's `rollout` over a vector of state
envs, and the per-episode success and chunk-join measures."""

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.metaworld import MetaworldEnv
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.scripts.lerobot_eval import rollout
from lerobot.utils.constants import ACTION
from torch import Tensor, nn

from ...blending import blend_join, chunk_overlap, default_blend_steps
from ..continuity import chunk_switch_changes, discontinuity_ratio
from ..metaworld.demos import default_to_headless_rendering
from ..metaworld.state import MetaworldStateEnv
from .act_smooth import CommittedPrefixChunking, hold_action
from .data import TrainingData
from .settings import ACT_BLEND_MODE, TEMPORAL_ENSEMBLE, StudySettings
from .training import Trainer
from .variants import ACT, ACT_SMOOTH_VARIANTS

TEMPORAL_ENSEMBLE_COEFF = 0.01  # ACT's published value


class DelayedChunking(nn.Module):
    """Plain chunking under an inference delay for a policy without one (LeRobot's ACT): the schedule of
    this plugin's `select_action` in `discard` mode. Each chunk contributes `n_action_steps` actions; when
    `delay` of them remain, the next chunk is predicted from the current observation and its first `delay`
    actions are dropped (they correspond to the steps that pass while it is computed). With `blend_steps`
    k > 0, each new chunk's first k actions are blended with the previous chunk's predictions for the same
    steps (`blending.blend_join`), as this plugin's `select_action` blends its own chunks."""

    def __init__(self, policy: PreTrainedPolicy, delay: int, n_action_steps: int, blend_steps: int = 0):
        super().__init__()
        chunk_size = policy.config.chunk_size
        if not 0 <= delay < n_action_steps or delay + n_action_steps > chunk_size:
            raise ValueError(
                f"Discard at delay {delay} needs 0 <= delay < n_action_steps ({n_action_steps}) and delay + "
                f"n_action_steps <= chunk_size ({chunk_size})."
            )
        self.policy, self.delay, self.n_action_steps = policy, delay, n_action_steps
        self.blend_steps = blend_steps
        self.config = policy.config
        self._queue: deque[Tensor] = deque()
        self._unqueued_tail: Tensor | None = None  # the last chunk's rows past its queued actions

    def reset(self) -> None:
        self.policy.reset()
        self._queue.clear()
        self._unqueued_tail = None

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor]) -> Tensor:
        first = 0 if not self._queue else self.delay if len(self._queue) == self.delay else None
        if first is not None:
            predicted = self.policy.predict_action_chunk(batch)  # [B, chunk_size, A]
            chunk = predicted[:, first : first + self.n_action_steps]
            if self._unqueued_tail is not None and self.blend_steps > 0:
                chunk = blend_join(chunk, self._unqueued_tail, 0, self.blend_steps)
            self._unqueued_tail = predicted[:, first + self.n_action_steps :]
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
    emulates delays itself). LeRobot's ACT runs plain chunking (`discard`), the same with this policy's
    default blending at the join (`blend`), or temporal ensembling."""
    if isinstance(policy, ACTPolicy):
        n_action_steps = policy.config.n_action_steps
        if mode == TEMPORAL_ENSEMBLE:
            return temporal_ensemble_act(policy)
        if mode == ACT_BLEND_MODE:
            return DelayedChunking(policy, delay, n_action_steps, act_blend_steps(policy.config))
        if mode != "discard":
            raise ValueError(
                f"LeRobot's ACT has no action prefix: modes 'discard', '{ACT_BLEND_MODE}' and "
                f"'{TEMPORAL_ENSEMBLE}' only, got '{mode}'."
            )
        return policy if delay == 0 else DelayedChunking(policy, delay, n_action_steps)
    policy.config.set_inference_setting(mode, delay)
    return policy


def act_blend_steps(config: ACTConfig) -> int:
    """The blend this policy's default (`rtc_blend_steps=None`) gives ACT's chunking: half of the overlap."""
    return default_blend_steps(chunk_overlap(config.chunk_size, config.n_action_steps))


def eval_settings(variant: str, delays: Sequence[int]) -> list[tuple[str, int]]:
    """The (mode, delay) pairs evaluated for a variant; delay 0 once for the RTC variants (both modes run
    the same code there); ACTSmooth runs on its committed prefix only; LeRobot's ACT with plain chunking,
    with this policy's blending at the join, and with temporal ensembling at delay 0."""
    if variant == ACT:
        plain = [("discard", d) for d in delays]
        return [(TEMPORAL_ENSEMBLE, 0), *plain, *[(ACT_BLEND_MODE, d) for d in delays]]
    if variant in ACT_SMOOTH_VARIANTS:
        return [("prefix", d) for d in delays]
    return [("prefix", d) for d in delays] + [("discard", d) for d in delays if d > 0]


def make_vector_env(task: str, n_envs: int, max_steps: int, actions: str):
    """A vector env of state envs; with LeRobot 0.6's `freeze_after_episode_end`, a finished episode stops
    costing simulation while the others run on (the rollout ignores its further steps either way)."""
    import gymnasium as gym

    try:
        from lerobot.envs.utils import freeze_after_episode_end
    except ImportError:  # LeRobot 0.4: its rollout cannot thaw frozen envs, so no freezing there
        def freeze_after_episode_end(make):
            return make

    def make() -> MetaworldStateEnv:
        return MetaworldStateEnv(task, max_steps, actions)

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
    episode_steps and the chunk-join measures (chunks start every `n_action_steps` steps; None: every step,
    as in temporal ensembling, so there are no joins)."""
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
            "episode_steps": len(actions),
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


def evaluate_model(
    trainer: Trainer,
    data: TrainingData,
    vector_env,
    env_processors: tuple,
    seeds: list[int],
    settings: StudySettings,
) -> list[dict[str, Any]]:
    """Every (mode, delay) of the trained model on the same env seeds."""
    records = []
    for mode, delay in eval_settings(trainer.variant, settings.delays):
        if trainer.variant in ACT_SMOOTH_VARIANTS:
            policy = CommittedPrefixChunking(
                trainer.policy, delay, settings.n_action_steps, hold_action(data.stats, data.demos)
            )
        else:
            policy = evaluated_policy(trainer.policy, mode, delay)
        chunk_every = None if mode == TEMPORAL_ENSEMBLE else settings.n_action_steps
        processors = (trainer.preprocessor, trainer.postprocessor)
        for episode in run_episodes(vector_env, policy, *processors, env_processors, seeds, chunk_every):
            records.append({**episode, "mode": mode, "delay": delay})
    return records


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
