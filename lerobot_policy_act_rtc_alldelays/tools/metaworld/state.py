"""MetaWorld with state observations: a closed-loop harness fast enough for CPU studies.

Nothing is rendered. Each env is LeRobot's own `MetaworldEnv` (the scene, camera-free, task and scripted
expert that `lerobot-eval --env.type=metaworld` uses), read through its MuJoCo env:

- `agent_pos` (-> `observation.state`): the end effector position and the gripper opening, exactly LeRobot's
  `agent_pos` (MetaWorld's observation [:4]);
- `environment_state` (-> `observation.environment_state`): MetaWorld's full 39-dim observation (hand,
  gripper, two objects' positions and orientations, the same at the previous step, and the goal).

LeRobot's `preprocess_observation` maps both keys, so `lerobot.scripts.lerobot_eval.rollout` evaluates a
policy in a `gymnasium.vector.SyncVectorEnv` of these envs: N episodes, one batched policy call per step.
An episode ends at the success step (as in LeRobot's env) or after `max_steps`.

Object positions are drawn from the env's own generator seeded by `reset(seed=...)` (MetaWorld's
`seeded_rand_vec`, which LeRobot 0.6 also sets), so a seed gives the same scene in every LeRobot release.

Actions come in one of two spaces (`ACTION_SPACES`):
- `position` (the default): an absolute end-effector target (hand xyz, m) and the gripper command, as an arm
  like the SO-101 is driven by position targets. Each step the env turns the target into MetaWorld's delta
  from the hand's commanded position, clipped to [-1, 1]: the command moves toward the target by at most
  `action_scale` (1 cm) a step, as a position controller saturates, and the hand follows it (see
  `metaworld.position`).
- `delta`: MetaWorld's native action, end-effector deltas in [-1, 1] (what `results/metaworld_state_study*`
  ran).

The gripper command is MetaWorld's finger actuator command in [-1, 1] (+1 closes, -1 opens), recorded as
the expert gives it in both spaces: it is the goal of the fingers' position servos, as an SO-101 dataset
records the gripper's goal position beside the arm's (a goal far beyond the fingers' 4 cm travel, so it
acts as a saturated closing or opening force). With relative
actions on, the policy subtracts every state dimension from the action dimension of the same index, the
gripper's too (goal minus measured opening, as for an SO-101's gripper joint); the subtraction is undone
exactly at inference, and the relative-action statistics absorb that the opening is in other units.

Demonstrations (`record_demos`) come from MetaWorld's scripted expert, either as is (`unimodal`) or with a
detour first (`multimodal`): the hand goes through a via-point left or right of the straight path to the
object, the side drawn at random per episode, and the expert takes over from there. Both sides are
successful ways of doing the task that an observation at the start cannot tell apart. In `noisy` demos the
expert's clean action is recorded but executed with Gaussian noise, as in the simulated benchmarks of the
real-time chunking papers: the states then contain recoveries that the recorded actions before them do not
predict. Under position targets the demonstrations record the target that the expert's delta commands;
with execution noise, the clean target is recorded and the noisy one executed.
"""

import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.metaworld import MetaworldEnv
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE

from .demos import lerobot_mujoco_env, set_max_episode_steps
from .position import (
    check_action_space,
    commanded_position,
    delta_to_target,
    position_action_space,
    target_of_delta,
)

AGENT_POS_DIM = 4  # hand xyz + gripper opening: LeRobot's `agent_pos`
ENV_STATE_DIM = 39  # MetaWorld's full observation
ACTION_DIM = 4  # hand xyz target (or delta) + gripper command
DEMO_CONDITIONS = ("unimodal", "multimodal", "noisy")
NOISY_EXECUTION_STD = 0.2  # 0.1 of the [-1, 1] action range

# Multimodal detour: the via-point is this far (m) to the side of the hand-to-object line, halfway along it
# and this much higher; the hand is steered there with the experts' own gain (action = gain * error).
VIA_LATERAL = 0.12
VIA_LIFT = 0.05
VIA_GAIN = 10.0
VIA_TOLERANCE = 0.015
VIA_MAX_STEPS = 60


def state_features() -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    """The policy's input and output features for this harness."""
    inputs = {
        OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(AGENT_POS_DIM,)),
        OBS_ENV_STATE: PolicyFeature(type=FeatureType.ENV, shape=(ENV_STATE_DIM,)),
    }
    return inputs, {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}


class MetaworldStateEnv(gym.Env):
    """One MetaWorld task with state observations and no rendering, driven by position targets or by
    MetaWorld's deltas (see the module docstring)."""

    metadata = {"render_modes": [], "render_fps": 80}

    def __init__(self, task: str, max_steps: int = 200, actions: str = "position"):
        super().__init__()
        check_action_space(actions)
        self.actions = actions
        lerobot_env = MetaworldEnv(task=task, **MetaworldEnvConfig(task=task).gym_kwargs)
        self.mujoco_env = lerobot_mujoco_env(lerobot_env)
        self.mujoco_env.seeded_rand_vec = True  # scenes drawn from the env's generator, seeded at reset
        self.task = lerobot_env.task
        self.task_description = lerobot_env.task_description
        self.expert_policy = lerobot_env.expert_policy
        set_max_episode_steps(self, max_steps)
        self.observation_space = spaces.Dict(
            {
                "agent_pos": spaces.Box(-np.inf, np.inf, (AGENT_POS_DIM,), np.float64),
                "environment_state": spaces.Box(-np.inf, np.inf, (ENV_STATE_DIM,), np.float64),
            }
        )
        if actions == "position":
            self.action_space = position_action_space()
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.raw_observation: np.ndarray | None = None

    def _observation(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        self.raw_observation = raw
        return {"agent_pos": raw[:AGENT_POS_DIM].copy(), "environment_state": raw.copy()}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.mujoco_env.seed(seed)
        raw, _ = self.mujoco_env.reset()
        return self._observation(raw), {"is_success": False}

    @property
    def commanded(self) -> np.ndarray:
        """The hand's commanded position [3] (see `metaworld.position`)."""
        return commanded_position(self.mujoco_env)

    @property
    def action_scale(self) -> float:
        """Metres per unit of MetaWorld's delta action."""
        return float(self.mujoco_env.action_scale)

    def step(self, action: np.ndarray):
        if self.actions == "position":
            action = delta_to_target(self.mujoco_env, action)
        else:
            action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        raw, reward, done, truncated, info = self.mujoco_env.step(action)
        is_success = bool(info.get("success", 0))
        terminated = bool(done) or is_success
        info = {"task": self.task, "is_success": is_success}
        if terminated:
            # LeRobot's rollout reads success from the vector env's `final_info`, as LeRobot's env sets it.
            info["final_info"] = {"task": self.task, "is_success": is_success}
        return self._observation(raw), float(reward), terminated, bool(truncated), info

    def expert_action(self) -> np.ndarray:
        """MetaWorld's scripted expert's delta action at the current state, clipped to [-1, 1]."""
        with warnings.catch_warnings():
            # The experts saturate their gains on purpose and warn about it at every call.
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            action = self.expert_policy.get_action(self.raw_observation)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def close(self):
        self.mujoco_env.close()


def make_state_vector_env(
    task: str, n_envs: int, max_steps: int = 200, actions: str = "position"
) -> gym.vector.SyncVectorEnv:
    """`n_envs` state envs of `task`, stepped in this process, for LeRobot's `rollout`."""
    if n_envs <= 0:
        raise ValueError(f"n_envs must be a positive number of parallel episodes, got {n_envs}.")
    return gym.vector.SyncVectorEnv(
        [lambda: MetaworldStateEnv(task, max_steps, actions) for _ in range(n_envs)]
    )


@dataclass
class Demo:
    """One recorded episode: observations before each action, the action, and how it was made."""

    seed: int
    mode: int  # 0: the expert as is; -1 / +1: detour to the left / right of the straight path
    state: np.ndarray  # [T, 4]
    env_state: np.ndarray  # [T, 39]
    action: np.ndarray  # [T, 4], in the env's action space
    success: bool

    @property
    def length(self) -> int:
        return len(self.action)


def via_point(raw: np.ndarray, side: int) -> np.ndarray:
    """The detour target of side -1 or +1, from the observation at the episode's start."""
    hand, target = raw[:3], raw[4:7]  # the first object: what the expert reaches for first
    direction = (target - hand)[:2]
    norm = np.linalg.norm(direction)
    direction = direction / norm if norm > 1e-6 else np.array([0.0, 1.0])
    lateral = np.array([-direction[1], direction[0], 0.0])
    return hand + 0.5 * (target - hand) + side * VIA_LATERAL * lateral + np.array([0.0, 0.0, VIA_LIFT])


def run_demo(
    env: MetaworldStateEnv, seed: int, mode: int, max_steps: int, execution_noise: float = 0.0
) -> Demo:
    """One demonstration in `env`, ending at the success step or after `max_steps`, in the env's action
    space. With `execution_noise`, the recorded action is executed plus Gaussian noise of that std (from a
    generator seeded by `seed`) on MetaWorld's delta, clipped to [-1, 1]."""
    noise_rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    via = via_point(env.raw_observation, mode) if mode else None
    states, env_states, actions = [], [], []
    success = False
    for step in range(max_steps):
        raw = env.raw_observation
        if via is not None and step < VIA_MAX_STEPS and np.linalg.norm(via - raw[:3]) > VIA_TOLERANCE:
            action = np.append(np.clip(VIA_GAIN * (via - raw[:3]), -1.0, 1.0), -1.0).astype(np.float32)
        else:
            via = None  # reached (or out of time): the expert takes over for the rest of the episode
            action = env.expert_action()
        executed = action
        if execution_noise:
            executed = np.clip(action + noise_rng.normal(0.0, execution_noise, action.shape), -1.0, 1.0)
        if env.actions == "position":
            action = target_of_delta(env.mujoco_env, action)
            executed = target_of_delta(env.mujoco_env, executed)
        states.append(observation["agent_pos"])
        env_states.append(observation["environment_state"])
        actions.append(action)
        observation, _, terminated, truncated, info = env.step(executed)
        if info["is_success"]:
            success = True
            break
        if terminated or truncated:
            break
    return Demo(
        seed=seed,
        mode=mode,
        state=np.asarray(states, dtype=np.float32),
        env_state=np.asarray(env_states, dtype=np.float32),
        action=np.asarray(actions, dtype=np.float32),
        success=success,
    )


def record_demos(
    task: str,
    n_episodes: int,
    demos: str = "unimodal",
    first_seed: int = 0,
    max_steps: int = 200,
    max_attempts: int | None = None,
    actions: str = "position",
) -> list[Demo]:
    """`n_episodes` successful demonstrations with seeds `first_seed`, `first_seed + 1`, ... (failed attempts
    are skipped, up to `max_attempts`, default 2 * n_episodes). In `multimodal` demos each seed also draws
    the detour side; in `noisy` demos it seeds the execution noise. `actions`: the action space recorded
    (`ACTION_SPACES`)."""
    if demos not in DEMO_CONDITIONS:
        raise ValueError(f"demos must be one of {DEMO_CONDITIONS}, got '{demos}'.")
    max_attempts = 2 * n_episodes if max_attempts is None else max_attempts
    env = MetaworldStateEnv(task, max_steps, actions)
    kept: list[Demo] = []
    try:
        for seed in range(first_seed, first_seed + max_attempts):
            if len(kept) == n_episodes:
                break
            mode = int(np.random.default_rng(seed).choice([-1, 1])) if demos == "multimodal" else 0
            execution_noise = NOISY_EXECUTION_STD if demos == "noisy" else 0.0
            demo = run_demo(env, seed, mode, max_steps, execution_noise)
            if demo.success:
                kept.append(demo)
    finally:
        env.close()
    if len(kept) < n_episodes:
        raise RuntimeError(
            f"Only {len(kept)} of {n_episodes} {demos} demonstrations of {task} succeeded in {max_attempts} "
            f"attempts (seeds {first_seed}..{first_seed + max_attempts - 1}): raise max_steps or "
            "max_attempts."
        )
    return kept


def lateral_deviation(demo: Demo) -> float:
    """The hand's largest signed distance (m) from the straight start-to-object line, over the first
    `VIA_MAX_STEPS` steps: positive to the left, negative to the right; the sign of a detour's mode."""
    start, target = demo.env_state[0, :3], demo.env_state[0, 4:7]
    direction = (target - start)[:2]
    direction = direction / max(np.linalg.norm(direction), 1e-6)
    lateral = np.array([-direction[1], direction[0]])
    offsets = (demo.state[:VIA_MAX_STEPS, :2] - start[:2]) @ lateral
    return float(offsets[np.argmax(np.abs(offsets))])
