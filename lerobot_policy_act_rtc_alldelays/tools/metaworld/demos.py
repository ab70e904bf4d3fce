"""Expert demonstrations of a MetaWorld task, recorded locally as a LeRobotDataset.

The frames come from LeRobot's own `MetaworldEnv` (the environment `lerobot-eval --env.type=metaworld`
builds), and are stored already downscaled through `pad_to_square_and_resize`, the function the policy's
preprocessor applies at evaluation: with `--policy.downscale_img_square` equal to the dataset's image size,
training and evaluation see the same pixels. The only difference is that storage quantizes the resized
image to uint8 (at most 0.5/255 per pixel), whereas evaluation feeds the float result. `--frame-size`
renders smaller frames than LeRobot's 480 px, without shadows (`metaworld.frames`), at a fraction of the
cost; evaluate with the same frame size then (`act-rtc-alldelays-delay-sweep --frame-size`), not with
`lerobot-eval`, which renders LeRobot's.

Actions come in one of two spaces (`metaworld.position.ACTION_SPACES`), named in the dataset's action
names (`ACTION_NAMES`):
- `position` (the default): the absolute end-effector target [target_x, target_y, target_z] (m) that the
  expert's delta commands (`metaworld.position`), and the gripper command, as a robot arm like the
  SO-101 records position targets. They are in the state's space (hand xyz, gripper opening), so train on
  them with relative actions (`--policy.predict_relative_actions=true`, the default), and evaluate with
  each env wrapped in `metaworld.position.PositionTargets` (`act-rtc-alldelays-delay-sweep --actions
  position`): plain `lerobot-eval` would execute the targets as deltas.
- `delta`: MetaWorld's native end-effector deltas and gripper effort, clipped to the action space [-1, 1] as
  the environment clips them; they are not in the state's space, so train on them with
  `--policy.predict_relative_actions=false`.
The expert's own delta is executed in both, so both record the same episodes.

Only episodes where the expert succeeds are kept. An episode ends at the success step: LeRobot's
`MetaworldEnv` resets itself there, and `lerobot-eval` ends the episode there too.

Object positions are drawn by MetaWorld from NumPy's global random generator (LeRobot's env ignores the
reset seed), so each episode seeds that generator with its own seed.
"""

import argparse
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
from lerobot.envs.metaworld import MetaworldEnv
from tqdm import tqdm

from ...image_resize import pad_to_square_and_resize
from ..dataset_writer import write_dataset
from .frames import frame_size_kwargs, render_frames_at
from .position import ACTION_SPACES, PositionTargets, check_action_space, target_of_delta

DEFAULT_TASK = "button-press-topdown-v3"
IMAGE_KEY = "observation.image"  # where LeRobot's metaworld features_map puts "pixels/top"
STATE_KEY = "observation.state"  # ... and "agent_pos"
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper_distance"]
ACTION_NAMES = {
    "position": ["target_x", "target_y", "target_z", "gripper"],
    "delta": ["delta_x", "delta_y", "delta_z", "gripper_effort"],
}


class RawObservationRecorder:
    """Stands in for the MuJoCo env inside LeRobot's `MetaworldEnv` and keeps its last raw observation.

    LeRobot's env only returns the rendered image and the 4-dim `agent_pos`, but MetaWorld's scripted expert
    needs the full raw observation (hand, objects, goal). Everything else is delegated unchanged.
    """

    def __init__(self, env: Any):
        self._env = env
        self.last_observation: np.ndarray | None = None

    def reset(self, *args, **kwargs):
        observation, info = self._env.reset(*args, **kwargs)
        self.last_observation = observation
        return observation, info

    def step(self, action):
        result = self._env.step(action)
        self.last_observation = result[0]
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def default_to_headless_rendering() -> None:
    """Without a display MuJoCo's default OpenGL backend (GLFW) cannot render, and gymnasium then fails
    instead of falling back; EGL renders headless (GPU, or Mesa's software renderer). An explicit
    MUJOCO_GL is kept. It is read when a renderer is created, so this must run before."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"


def lerobot_mujoco_env(env: MetaworldEnv, wrapper: Callable[[Any], Any] | None = None) -> Any:
    """The MetaWorld (MuJoCo) env inside LeRobot's `MetaworldEnv`, created if needed; with `wrapper`, that
    env is first replaced by `wrapper(env)` (every later step of LeRobot's env then goes through it).

    The only access to LeRobot's private MetaWorld internals. LeRobot 0.4.4 and 0.6.1 give no public
    handle on the MuJoCo env, yet the scripted expert and the state observations need MetaWorld's full
    39-dim observation, which LeRobot's env drops. LeRobot 0.4 creates it in `__init__`, 0.6 on first use
    in `_ensure_env()`; both keep it in `_env`. tests/tools/test_study.py checks this contract and fails
    loudly when a LeRobot release changes it.
    """
    ensure_env = getattr(env, "_ensure_env", None)
    if ensure_env is not None:
        ensure_env()
    mujoco_env = getattr(env, "_env", None)
    if mujoco_env is None or not hasattr(mujoco_env, "step"):
        raise RuntimeError(
            f"LeRobot's MetaworldEnv no longer keeps its MuJoCo env in `_env` (found {mujoco_env!r}): update "
            f"`lerobot_mujoco_env` in {__name__} for this LeRobot release."
        )
    if wrapper is not None:
        env._env = mujoco_env = wrapper(mujoco_env)
    return mujoco_env


def set_max_episode_steps(env: gym.Env, max_steps: int) -> int:
    """Caps the episodes that LeRobot's `rollout` runs in `env` (an env of a vector env) at `max_steps`, or
    at the env's own limit if that is lower (MetaWorld's is 500). Returns the limit now in force.

    `rollout` reads the private `_max_episode_steps` of the first env (through `env.call`) and offers no
    other way to set the limit. tests/tools/test_study.py checks that `rollout` still stops there.
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be a positive number of control steps, got {max_steps}.")
    env._max_episode_steps = min(max_steps, getattr(env, "_max_episode_steps", max_steps))
    return env._max_episode_steps


def with_position_targets(env: MetaworldEnv) -> PositionTargets:
    """LeRobot's MetaWorld `env` driven by position targets instead of deltas."""
    return PositionTargets(env, lerobot_mujoco_env(env))


def make_expert_env(task: str, frame_size: int | None = None) -> MetaworldEnv:
    """LeRobot's MetaWorld env with the settings of its `--env.type=metaworld` config (pixels + agent_pos),
    rendering `frame_size` px frames without shadows (`metaworld.frames`; None: LeRobot's 480 px), its MuJoCo
    env wrapped in a `RawObservationRecorder` for the expert."""
    default_to_headless_rendering()
    env = MetaworldEnv(task=task, **MetaworldEnvConfig(task=task).gym_kwargs, **frame_size_kwargs(frame_size))
    recorder = lerobot_mujoco_env(env, wrapper=RawObservationRecorder)
    if frame_size is not None:
        render_frames_at(recorder, frame_size)
    return env


def frame_for_dataset(frame: np.ndarray, size: int) -> np.ndarray:
    """A rendered [H, W, 3] uint8 frame -> the [size, size, 3] uint8 image to store.

    The frame goes through what evaluation applies (uint8 -> float CHW in [0, 1], as LeRobot's
    `preprocess_observation` does, then `pad_to_square_and_resize`), and is quantized back to uint8.
    """
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).to(torch.float32) / 255
    resized = pad_to_square_and_resize(image, size)
    return (resized * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def dataset_features(image_size: int, actions: str) -> dict[str, dict]:
    action_names = ACTION_NAMES[actions]
    return {
        IMAGE_KEY: {
            "dtype": "image",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        },
        STATE_KEY: {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": (len(action_names),), "names": action_names},
    }


def run_expert_episode(
    env: MetaworldEnv, seed: int, image_size: int, max_steps: int, actions: str = "position"
) -> tuple[list[dict[str, Any]], bool]:
    """Runs the scripted expert for one episode in an env from `make_expert_env`. Returns the frames to
    store, with actions in the `actions` space, and whether the expert succeeded."""
    check_action_space(actions)
    recorder = lerobot_mujoco_env(env)
    np.random.seed(seed)  # MetaWorld draws the object positions from NumPy's global generator
    observation, _ = env.reset(seed=seed)
    frames = []
    for _ in range(max_steps):
        with warnings.catch_warnings():
            # MetaWorld's experts use gains that saturate the action on purpose, and warn about it each call.
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            expert_action = env.expert_policy.get_action(recorder.last_observation)
        action = np.clip(expert_action, -1.0, 1.0).astype(np.float32)
        if actions == "position":
            stored = target_of_delta(recorder, action)
        else:
            stored = action
        frames.append(
            {
                IMAGE_KEY: frame_for_dataset(observation["pixels"], image_size),
                STATE_KEY: observation["agent_pos"].astype(np.float32),
                "action": stored,
                "task": env.task_description,
            }
        )
        # The expert's delta itself, not the stored target converted back: the env moves exactly as the
        # expert moves it, whatever float32 storage rounds off the target.
        observation, _, terminated, truncated, info = env.step(action)
        if info["is_success"]:
            return frames, True
        if terminated or truncated:
            break
    return frames, False


def make_metaworld_dataset(
    root: str | Path,
    task: str = DEFAULT_TASK,
    n_episodes: int = 30,
    image_size: int = 96,
    max_steps: int = 200,
    seed: int = 0,
    repo_id: str | None = None,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    actions: str = "position",
    frame_size: int | None = None,
) -> LeRobotDataset:
    """Writes `n_episodes` successful expert episodes under `root` (which must not exist) and returns the
    dataset. Episode `i` of the attempts uses seed `seed + i`; failed attempts are skipped (kept only with
    `keep_failed`, for tests), up to `max_attempts` (default `2 * n_episodes`). `actions`: the action space
    stored (`ACTION_SPACES`, see the module docstring); `frame_size`: the rendered frames' side (None:
    LeRobot's 480 px), resized to `image_size` for storage."""
    check_action_space(actions)
    max_attempts = 2 * n_episodes if max_attempts is None else max_attempts
    env = make_expert_env(task, frame_size)
    kept = 0

    def episodes() -> Iterator[list[dict[str, Any]]]:
        nonlocal kept
        progress = tqdm(total=n_episodes, desc=f"Expert episodes ({task})", unit="episode")
        try:
            for attempt in range(max_attempts):
                if kept == n_episodes:
                    return
                frames, success = run_expert_episode(env, seed + attempt, image_size, max_steps, actions)
                if not (success or keep_failed):
                    progress.write(f"seed {seed + attempt}: no expert success in {max_steps} steps, skipped")
                    continue
                kept += 1
                progress.update()
                yield frames
        finally:
            progress.close()
            env.close()

    fps = MetaworldEnvConfig(task=task).fps
    dataset = write_dataset(
        root,
        repo_id or f"local/metaworld_{task}",
        fps,
        dataset_features(image_size, actions),
        "sawyer",
        episodes(),
    )
    if kept < n_episodes:
        raise RuntimeError(
            f"Only {kept} of {n_episodes} expert episodes succeeded in {max_attempts} attempts; raise "
            f"--max-steps or --max-attempts."
        )
    return dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="dataset folder to create (must not exist)")
    parser.add_argument("--task", default=DEFAULT_TASK, help="MetaWorld task, e.g. button-press-topdown-v3")
    parser.add_argument("--episodes", type=int, default=30, help="successful episodes to record")
    parser.add_argument(
        "--image-size",
        type=int,
        default=96,
        help="stored square side; use the same value as --policy.downscale_img_square",
    )
    parser.add_argument(
        "--frame-size",
        type=int,
        default=None,
        help="render frames of this side, without shadows (default: LeRobot's 480 px); evaluate with the "
        "same --frame-size",
    )
    parser.add_argument("--max-steps", type=int, default=200, help="step cap per episode")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 each)")
    parser.add_argument("--max-attempts", type=int, default=None, help="default: 2 x episodes")
    parser.add_argument("--repo-id", default=None, help="default: local/metaworld_<task>")
    parser.add_argument(
        "--actions",
        choices=ACTION_SPACES,
        default="position",
        help="position: end-effector targets (train with relative actions); delta: MetaWorld's native deltas",
    )
    args = parser.parse_args(argv)
    dataset = make_metaworld_dataset(
        args.root,
        task=args.task,
        n_episodes=args.episodes,
        image_size=args.image_size,
        max_steps=args.max_steps,
        seed=args.seed,
        repo_id=args.repo_id,
        max_attempts=args.max_attempts,
        actions=args.actions,
        frame_size=args.frame_size,
    )
    print(
        f"Wrote {dataset.meta.total_episodes} episodes ({dataset.meta.total_frames} frames) of {args.task} "
        f"to {args.root} (repo_id {dataset.meta.repo_id})"
    )


if __name__ == "__main__":
    main()
