"""Writing a LeRobotDataset from episodes of frames: the one writer behind every dataset a tool creates."""

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lerobot.datasets.lerobot_dataset import LeRobotDataset


def write_dataset(
    root: str | Path,
    repo_id: str,
    fps: int,
    features: dict[str, dict],
    robot_type: str,
    episodes: Iterable[Sequence[dict[str, Any]]],
) -> LeRobotDataset:
    """Creates a dataset under `root` (which must not exist), stores every episode and returns the dataset.

    Each episode is a sequence of frames as `LeRobotDataset.add_frame` takes them (feature values and
    "task"). `episodes` may be a generator that records while it is consumed. Images are stored as PNG,
    not video, so the stored pixels are exactly the ones given. The dataset is finalized even when the
    generator raises, so the episodes written so far stay readable.
    """
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=fps, features=features, root=root, robot_type=robot_type, use_videos=False
    )
    try:
        for frames in episodes:
            for frame in frames:
                dataset.add_frame(dict(frame))
            dataset.save_episode()
    finally:
        dataset.finalize()
    return dataset
