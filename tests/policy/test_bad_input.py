"""Bad datasets and checkpoints are refused with errors that say what is wrong, where and how to fix it."""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_policy, tiny_dataset_config
from lerobot.configs.policies import PreTrainedConfig
from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
from lerobot.policies.factory import make_policy as lerobot_make_policy
from safetensors.torch import load_file, save_file

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig, ACTRelativeRTCAllDelaysPolicy

# Dataset index 27 is episode 1, frame 7 of the 4 x 20-frame synthetic dataset.
BAD_INDEX, BAD_EPISODE, BAD_FRAME = 27, 1, 7


def _config(**overrides) -> ACTRelativeRTCAllDelaysConfig:
    fields = dict(chunk_size=4, n_action_steps=4, rtc_max_delay=2)
    return tiny_dataset_config(**{**fields, **overrides})


def _poisoned_copy(dataset, tmp_path, column: str, value: float) -> LeRobotDatasetMetadata:
    """A copy of the dataset whose `column` holds `value` in one entry of frame BAD_INDEX."""
    root = tmp_path / "poisoned"
    shutil.copytree(dataset.meta.root, root)
    for path in sorted((root / "data").glob("**/*.parquet")):
        table = pq.read_table(path)
        index = table.column("index").to_numpy()
        if BAD_INDEX not in index:
            continue
        values = np.stack(table.column(column).to_pylist())
        values[np.flatnonzero(index == BAD_INDEX)[0], 3] = value
        position = table.schema.get_field_index(column)
        field_type = table.schema.field(column).type
        table = table.set_column(position, column, pa.array(list(values), type=field_type))
        pq.write_table(table, path)
    return LeRobotDatasetMetadata(dataset.meta.repo_id, root=root)


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("column", ["action", "observation.state"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_dataset_values_are_refused_before_training(
    synthetic_dataset, tmp_path, column, value, relative
):
    meta = _poisoned_copy(synthetic_dataset, tmp_path, column, value)
    message = (
        rf"NaN or inf values in '{column}' in 1 of 80 frames, the first at episode {BAD_EPISODE}, "
        rf"frame {BAD_FRAME} \(dataset index {BAD_INDEX}\)"
    )
    with pytest.raises(ValueError, match=message):
        lerobot_make_policy(_config(predict_relative_actions=relative), ds_meta=meta)


def test_set_stats_refuses_non_finite_statistics():
    policy = make_policy()
    with pytest.raises(ValueError, match=r"invalid in action dimensions \[2\]"):
        policy.relative_action_normalizer.set_stats(
            torch.zeros(4), torch.tensor([1.0, 1.0, float("inf"), 1.0])
        )


@pytest.fixture(scope="module")
def checkpoint(synthetic_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint")
    lerobot_make_policy(_config(), ds_meta=synthetic_dataset.meta).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("name", "value"),
    [("std", 0.0), ("std", -1.0), ("std", float("nan")), ("mean", float("inf")), ("mean", float("nan"))],
)
def test_a_checkpoint_with_invalid_statistics_is_refused_at_loading(checkpoint, tmp_path, name, value):
    shutil.copytree(checkpoint, tmp_path, dirs_exist_ok=True)
    state = load_file(tmp_path / "model.safetensors")
    state[f"relative_action_normalizer.{name}"][1] = value
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"loaded relative-action statistics .* invalid in action dimensions \[1\]"
    ):
        ACTRelativeRTCAllDelaysPolicy.from_pretrained(tmp_path)


def test_a_checkpoint_loaded_with_the_other_attention_mode_is_refused(checkpoint):
    config = PreTrainedConfig.from_pretrained(checkpoint)
    config.rtc_prefix_attention = "shared_observation"
    with pytest.raises(
        ValueError,
        match=r"trained with `rtc_prefix_attention=full`.*"
        r"--policy.rtc_prefix_attention=full",
    ):
        ACTRelativeRTCAllDelaysPolicy.from_pretrained(checkpoint, config=config)


def test_a_checkpoint_loads_with_the_attention_mode_it_was_trained_with(checkpoint):
    policy = ACTRelativeRTCAllDelaysPolicy.from_pretrained(checkpoint)
    assert policy.config.rtc_prefix_attention == "full"
    assert int(policy.trained_prefix_attention) == 0
