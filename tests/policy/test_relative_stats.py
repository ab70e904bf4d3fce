"""Relative-action statistics: from exactly the (state, window) pairs training sees, columns only; kept on
resume, re-derived when fine-tuning on other data."""

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import tiny_dataset_config
from lerobot.configs.policies import PreTrainedConfig
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.factory import make_policy
from safetensors.torch import save_file

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig, dataset_derived
from lerobot_policy_act_rtc_alldelays.relative_actions import (
    compute_relative_action_stats,
    read_state_and_action_columns,
    stats_fingerprint,
)
from lerobot_policy_act_rtc_alldelays.tools.synthetic_dataset import make_synthetic_dataset


def _config(**overrides) -> ACTRelativeRTCAllDelaysConfig:
    fields = dict(chunk_size=6, n_action_steps=6, rtc_max_delay=2, first_action_index=1)
    return tiny_dataset_config(**{**fields, **overrides})


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


def _load_for_training(checkpoint, dataset_meta, **overrides):
    """What lerobot-train does for `--policy.path` and `--resume`: make_policy with the checkpoint's config,
    `pretrained_path` set and the training dataset's metadata."""
    config = PreTrainedConfig.from_pretrained(checkpoint)
    for name, value in overrides.items():
        setattr(config, name, value)
    config.pretrained_path = checkpoint
    return make_policy(config, ds_meta=dataset_meta)


def test_resuming_on_the_same_data_keeps_the_checkpoint_values_bit_exact(
    synthetic_dataset, tmp_path, monkeypatch, caplog
):
    trained = make_policy(_config(action_loss_weights={"joint_5.pos": 3.0}), ds_meta=synthetic_dataset.meta)
    trained.save_pretrained(tmp_path)

    # Recomputing would give the same values here: make the dataset's differ to see which ones are kept.
    monkeypatch.setattr(
        dataset_derived,
        "compute_relative_action_stats",
        lambda *args: (torch.full((6,), 7.0), torch.full((6,), 9.0)),
    )
    with caplog.at_level("INFO"):
        loaded = _load_for_training(tmp_path, synthetic_dataset.meta)
    assert "Resuming or continuing on the same data" in caplog.text
    for name in ("relative_action_normalizer.mean", "relative_action_normalizer.std", "action_loss_weight"):
        assert torch.equal(loaded.get_buffer(name), trained.get_buffer(name)), name
    assert torch.equal(loaded.stats_fingerprint, trained.stats_fingerprint)


def test_fine_tuning_on_another_dataset_derives_its_statistics_and_weights(
    synthetic_dataset, tmp_path, caplog
):
    trained = make_policy(_config(action_loss_weights={"joint_5.pos": 3.0}), ds_meta=synthetic_dataset.meta)
    trained.save_pretrained(tmp_path / "checkpoint")
    other = make_synthetic_dataset(tmp_path / "other", n_episodes=2, episode_length=12, seed=5).meta

    with caplog.at_level("INFO"):
        tuned = _load_for_training(tmp_path / "checkpoint", other, action_loss_weights={"joint_1.pos": 2.0})
    assert "Fine-tuning on other data" in caplog.text
    mean, std = compute_relative_action_stats(
        *read_state_and_action_columns(other.root, "observation.state", "action"),
        tuned.config.action_delta_indices,
    )
    assert torch.equal(tuned.relative_action_normalizer.mean, mean)
    assert torch.equal(tuned.relative_action_normalizer.std, std)
    assert tuned.action_loss_weight.tolist() == [1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert not torch.equal(tuned.stats_fingerprint, trained.stats_fingerprint)
    # The learned weights do come from the checkpoint.
    assert torch.equal(tuned.model.action_head.weight, trained.model.action_head.weight)


def test_fine_tuning_rejects_weight_names_the_new_dataset_lacks(synthetic_dataset, tmp_path):
    trained = make_policy(_config(), ds_meta=synthetic_dataset.meta)
    trained.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"names \['wrist.pos'\] are not action names of the dataset"):
        _load_for_training(tmp_path, synthetic_dataset.meta, action_loss_weights={"wrist.pos": 2.0})


def test_a_checkpoint_without_a_recorded_source_gets_the_datasets_statistics(synthetic_dataset, tmp_path):
    trained = make_policy(_config(), ds_meta=synthetic_dataset.meta)
    state = {k: v for k, v in trained.state_dict().items() if k != "stats_fingerprint"}
    state["relative_action_normalizer.mean"] = state["relative_action_normalizer.mean"] + 1.0
    save_file(state, tmp_path / "model.safetensors")
    trained.config.save_pretrained(tmp_path)
    loaded = _load_for_training(tmp_path, synthetic_dataset.meta)
    assert torch.equal(loaded.relative_action_normalizer.mean, trained.relative_action_normalizer.mean)


def test_the_fingerprint_depends_on_the_values_and_the_action_window():
    episode_index = np.repeat([0, 1], 5)
    values = np.arange(20.0).reshape(10, 2)
    base = stats_fingerprint([episode_index, values, values], [0, 1, 2])
    assert torch.equal(base, stats_fingerprint([episode_index, values.copy(), values], [0, 1, 2]))
    changed = values.copy()
    changed[7, 1] += 1e-9
    assert not torch.equal(base, stats_fingerprint([episode_index, changed, values], [0, 1, 2]))
    assert not torch.equal(base, stats_fingerprint([episode_index, values, values], [1, 2, 3]))


def test_action_loss_weights_are_resolved_from_the_dataset_names(synthetic_dataset):
    policy = make_policy(_config(action_loss_weights={"joint_5.pos": 3.0}), ds_meta=synthetic_dataset.meta)
    assert policy.action_loss_weight.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 3.0]
