"""Position targets for MetaWorld: the absolute end-effector target that MetaWorld's delta action commands,
and back.

MetaWorld's arm takes deltas: each step its mocap body (the hand's commanded position, which the hand
follows through a weld constraint) moves by `action[:3] * action_scale` metres, `action` clipped to
[-1, 1]. A robot arm like the SO-101 takes absolute position targets instead. A position action is
`[x, y, z, gripper]`: the hand's target (m) and the gripper command; each step it becomes the delta that
moves the commanded position toward the target, clipped to [-1, 1], so the command moves at most
`action_scale` (1 cm) a step, as a position controller saturates, and holds still at a target reached. The
measured hand lags the command while it moves, as a servo's measured position lags its goal. (Deltas from
the measured hand instead would integrate that lag into the command and oscillate about a fixed target.)
The gripper command (MetaWorld's finger actuator goal, +1 closes, -1 opens) is the same in both spaces.

`PositionTargets` drives an env that takes MetaWorld's deltas (LeRobot's `MetaworldEnv`) with position
actions.
"""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ACTION_SPACES = ("position", "delta")


def check_action_space(actions: str) -> None:
    if actions not in ACTION_SPACES:
        raise ValueError(f"actions must be one of {ACTION_SPACES}, got '{actions}'.")


def commanded_position(mujoco_env: Any) -> np.ndarray:
    """The hand's commanded position [3]: MetaWorld's mocap body, which its deltas move and the hand follows
    through a weld constraint, lagging it while it moves as a servo's measured position lags its goal."""
    return np.array(mujoco_env.data.mocap_pos[0], dtype=np.float64)


def position_target(commanded: np.ndarray, delta_action: np.ndarray, action_scale: float) -> np.ndarray:
    """The position action [x, y, z, gripper] that MetaWorld's delta action [4] commands from the commanded
    position `commanded` [3]."""
    delta_action = np.clip(delta_action, -1.0, 1.0)
    return np.append(commanded + delta_action[:3] * action_scale, delta_action[3]).astype(np.float32)


def target_of_delta(mujoco_env: Any, delta_action: np.ndarray) -> np.ndarray:
    """The position action that MetaWorld's `delta_action` commands in `mujoco_env` now."""
    return position_target(commanded_position(mujoco_env), delta_action, float(mujoco_env.action_scale))


def delta_to_target(mujoco_env: Any, target: np.ndarray) -> np.ndarray:
    """MetaWorld's delta action that moves `mujoco_env`'s commanded position toward the position action
    `target`."""
    return delta_toward(commanded_position(mujoco_env), np.asarray(target), float(mujoco_env.action_scale))


def position_action_space() -> spaces.Box:
    """The hand target is unbounded: a target beyond one step's reach saturates in `delta_toward`."""
    high = np.array([np.inf, np.inf, np.inf, 1.0], np.float32)
    return spaces.Box(-high, high, dtype=np.float32)


def delta_toward(commanded: np.ndarray, target: np.ndarray, action_scale: float) -> np.ndarray:
    """MetaWorld's delta action [4] that moves the commanded position `commanded` [3] toward the position
    action `target` [4], saturating at the action range like a position controller at its velocity
    limit."""
    delta = np.append((np.asarray(target[:3], np.float64) - commanded) / action_scale, target[3])
    return np.clip(delta, -1.0, 1.0).astype(np.float32)


class PositionTargets(gym.Wrapper):
    """Takes position actions [x, y, z, gripper] and steps the wrapped env, which takes MetaWorld's deltas
    (LeRobot's `MetaworldEnv`), with `delta_toward` from the commanded position of `mujoco_env`, the MuJoCo
    env inside it. Other attributes (`_max_episode_steps`, ...) are the wrapped env's, read through
    `get_wrapper_attr` as LeRobot's rollout reads them (`env.call`)."""

    def __init__(self, env: gym.Env, mujoco_env: Any):
        super().__init__(env)
        self.mujoco_env = mujoco_env
        self.action_space = position_action_space()

    # LeRobot 0.4.4's rollout looks for the task with `hasattr(env, ...)`, which gymnasium 1.x wrappers do not
    # forward: without these it would evaluate without the task (0.6.1 reads it through `env.call`).
    @property
    def task(self) -> str:
        return self.env.get_wrapper_attr("task")

    @property
    def task_description(self) -> str:
        return self.env.get_wrapper_attr("task_description")

    def step(self, action: np.ndarray):
        return self.env.step(delta_to_target(self.mujoco_env, action))
