"""Relative-action statistics: from exactly the (state, window) pairs training sees, columns only."""

import numpy as np
import PIL.Image
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.factory import make_policy

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig, modeling_act_relative_rtc
from lerobot_policy_act_rtc_alldelays.relative_actions import (
    compute_relative_action_stats,
    read_state_and_action_columns,
)


def _config(**overrides) -> ACTRelativeRTCAllDelaysConfig:
    fields = dict(
        device="cpu",
        pretrained_backbone_weights=None,
        chunk_size=6,
        n_action_steps=6,
        rtc_max_delay=2,
        first_action_index=1,
        dim_model=32,
        n_heads=4,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
        use_vae=False,
        push_to_hub=False,
    )
    fields.update(overrides)
    return ACTRelativeRTCAllDelaysConfig(**fields)


def _windows_seen_by_training(dataset_root, repo_id, fps, action_offsets):
    """Brute force: every (state, action window) LeRobotDataset returns for these delta_timestamps."""
    dataset = LeRobotDataset(
        repo_id, root=dataset_root, delta_timestamps={"action": [k / fps for k in action_offsets]}
    )
    relative = [item["action"] - item["observation.state"] for item in dataset]
    return torch.cat(relative).double()


def test_stats_equal_those_of_every_training_window_padding_included(synthetic_dataset):
    offsets = _config().action_delta_indices
    meta = synthetic_dataset.meta
    expected = _windows_seen_by_training(meta.root, meta.repo_id, meta.fps, offsets)

    mean, std = compute_relative_action_stats(
        *read_state_and_action_columns(meta.root, "observation.state", "action"), offsets
    )

    assert torch.allclose(mean.double(), expected.mean(0), atol=1e-5)
    assert torch.allclose(std.double(), expected.std(0, unbiased=False), atol=1e-5)


def test_stats_read_no_image(synthetic_dataset, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    episode_index, state, action = read_state_and_action_columns(
        synthetic_dataset.meta.root, "observation.state", "action"
    )
    assert state.shape == action.shape == (synthetic_dataset.meta.total_frames, 6)
    assert np.array_equal(np.unique(episode_index), np.arange(4))


def test_make_policy_computes_the_stats_when_training_from_scratch(synthetic_dataset):
    config = _config()
    policy = make_policy(config, ds_meta=synthetic_dataset.meta)
    meta = synthetic_dataset.meta
    mean, std = compute_relative_action_stats(
        *read_state_and_action_columns(meta.root, "observation.state", "action"), config.action_delta_indices
    )
    assert torch.allclose(policy.relative_action_normalizer.mean, mean)
    assert torch.allclose(policy.relative_action_normalizer.std, std)


def test_stats_are_not_recomputed_when_loading_a_checkpoint(synthetic_dataset, tmp_path, monkeypatch):
    trained = make_policy(_config(), ds_meta=synthetic_dataset.meta)
    trained.save_pretrained(tmp_path)

    def must_not_read(*args, **kwargs):
        raise AssertionError("statistics recomputed from the dataset")

    monkeypatch.setattr(modeling_act_relative_rtc, "read_state_and_action_columns", must_not_read)
    config = _config(pretrained_path=tmp_path)
    loaded = make_policy(config, ds_meta=synthetic_dataset.meta)
    assert torch.equal(loaded.relative_action_normalizer.mean, trained.relative_action_normalizer.mean)
    assert torch.equal(loaded.relative_action_normalizer.std, trained.relative_action_normalizer.std)


def test_action_loss_weights_are_resolved_from_the_dataset_names(synthetic_dataset):
    policy = make_policy(_config(action_loss_weights={"joint_5.pos": 3.0}), ds_meta=synthetic_dataset.meta)
    assert policy.action_loss_weight.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 3.0]
