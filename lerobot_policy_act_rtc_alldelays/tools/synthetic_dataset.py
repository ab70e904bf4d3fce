"""A small synthetic LeRobotDataset, created locally: smooth joint trajectories and a camera that sees them.

Used by the tests and the A/B comparison where no Hub dataset is reachable. Each episode moves the joints
along random smooth sinusoids; `action[t]` is the state at `t + 1` (a position target, as on an SO-101);
the camera image shows a bright blob whose position and size follow the first joints, so the images carry
the information the policy needs.
"""

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE
from tqdm import tqdm

from .dataset_writer import write_dataset

IMAGE_KEY = f"{OBS_IMAGES}.wrist"


def dataset_features(state_dim: int, image_height: int, image_width: int) -> dict:
    joint_names = [f"joint_{i}.pos" for i in range(state_dim)]
    return {
        OBS_STATE: {"dtype": "float32", "shape": (state_dim,), "names": joint_names},
        ACTION: {"dtype": "float32", "shape": (state_dim,), "names": joint_names},
        IMAGE_KEY: {
            "dtype": "image",
            "shape": (image_height, image_width, 3),
            "names": ["height", "width", "channels"],
        },
    }


def render_blob(state: np.ndarray, image_height: int, image_width: int) -> np.ndarray:
    """An [H, W, 3] uint8 image with a blob at (state[0], state[1]) whose radius follows state[2]."""
    rows = np.linspace(-1.5, 1.5, image_height)[:, None]
    cols = np.linspace(-1.5, 1.5, image_width)[None, :]
    radius = 0.25 + 0.1 * np.tanh(state[2 % len(state)])
    intensity = np.exp(-((rows - state[0]) ** 2 + (cols - state[1 % len(state)]) ** 2) / (2 * radius**2))
    image = np.stack([intensity, 0.5 * intensity, 1.0 - intensity], axis=-1)
    return (255 * image).astype(np.uint8)


def make_synthetic_dataset(
    root: str | Path,
    n_episodes: int = 4,
    episode_length: int = 40,
    state_dim: int = 6,
    image_height: int = 48,
    image_width: int = 64,
    fps: int = 30,
    seed: int = 0,
    repo_id: str = "local/act_rtc_synthetic",
) -> LeRobotDataset:
    """Writes the dataset under `root` (which must not exist yet) and returns it."""
    rng = np.random.default_rng(seed)
    time = np.arange(episode_length + 1) / fps

    def episodes() -> Iterator[list[dict]]:
        for _ in tqdm(range(n_episodes), desc="Synthetic episodes", unit="episode"):
            frequency = rng.uniform(0.3, 1.0, size=state_dim)
            phase = rng.uniform(0, 2 * np.pi, size=state_dim)
            amplitude = rng.uniform(0.3, 1.0, size=state_dim)
            trajectory = amplitude * np.sin(2 * np.pi * frequency * time[:, None] + phase)
            trajectory = trajectory.astype(np.float32)
            yield [
                {
                    OBS_STATE: trajectory[t],
                    ACTION: trajectory[t + 1],
                    IMAGE_KEY: render_blob(trajectory[t], image_height, image_width),
                    "task": "follow the trajectory",
                }
                for t in range(episode_length)
            ]

    features = dataset_features(state_dim, image_height, image_width)
    return write_dataset(root, repo_id, fps, features, "synthetic_arm", episodes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to create (must not exist)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--episode-length", type=int, default=80)
    parser.add_argument("--state-dim", type=int, default=6)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_synthetic_dataset(
        args.root, args.episodes, args.episode_length, args.state_dim, args.height, args.width, seed=args.seed
    )
    print(f"Wrote {args.episodes} episodes to {args.root}")


if __name__ == "__main__":
    main()
