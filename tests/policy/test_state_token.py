"""The robot-state token (`use_state_token`): the state is a network input, as in LeRobot's ACT."""

import json
import logging

import torch
from conftest import STATE_KEY, make_batch, make_policy, tiny_config, tiny_dataset_config
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_policy as make_policy_from_dataset
from lerobot.utils.constants import ACTION, OBS_ENV_STATE

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.relative_actions import read_dataset_columns


def _observation(policy, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = make_batch(policy.config, batch_size=2, seed=seed)
    return {key: value for key, value in batch.items() if key.startswith("observation.")}


def _with_other_state(observation: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**observation, STATE_KEY: observation[STATE_KEY] + 1.0}


def _relative_chunk(policy, observation: dict[str, torch.Tensor]) -> torch.Tensor:
    """The returned chunk minus the state: with unit statistics, the model's own output."""
    return policy.predict_action_chunk(observation) - observation[STATE_KEY].unsqueeze(1)


def test_with_absolute_actions_the_prediction_depends_on_the_state():
    policy = make_policy(predict_relative_actions=False).eval()
    observation = _observation(policy)

    chunk = policy.predict_action_chunk(observation)
    moved = policy.predict_action_chunk(_with_other_state(observation))

    assert not torch.allclose(chunk, moved, atol=1e-4)


def test_with_relative_actions_the_state_is_read_beyond_the_origin():
    # Unit statistics: the returned chunk is the model's output plus the state. Without a state token, moving
    # the state would move the chunk by exactly as much.
    policy = make_policy().eval()
    observation = _observation(policy)
    moved_observation = _with_other_state(observation)

    relative = _relative_chunk(policy, observation)
    moved_relative = _relative_chunk(policy, moved_observation)

    assert not torch.allclose(relative, moved_relative, atol=1e-4)


def test_without_the_state_token_the_state_only_sets_the_origin():
    policy = make_policy(use_state_token=False).eval()
    observation = _observation(policy)
    moved_observation = _with_other_state(observation)

    relative = _relative_chunk(policy, observation)
    moved_relative = _relative_chunk(policy, moved_observation)

    assert torch.allclose(relative, moved_relative, atol=1e-5)


def test_the_state_token_reads_the_state_normalized_with_the_datasets_statistics():
    policy = make_policy().eval()
    observation = _observation(policy)
    chunk = policy.predict_action_chunk(observation)

    # Statistics that map the moved state onto the original one: the network's input is unchanged, so the
    # relative prediction is too.
    dim = policy.config.robot_state_feature.shape[0]
    policy.state_normalizer.set_stats(torch.ones(dim), torch.ones(dim))
    moved_observation = _with_other_state(observation)
    moved_chunk = policy.predict_action_chunk(moved_observation)

    assert torch.allclose(moved_chunk - 1.0, chunk, atol=1e-5)


def test_a_checkpoint_saved_before_the_state_token_loads_and_predicts_as_before(tmp_path):
    old = make_policy(use_state_token=False).eval()
    old.save_pretrained(tmp_path)
    # A config written before the field existed does not mention it, so it loads with the default (true).
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    del config["use_state_token"]
    config_path.write_text(json.dumps(config))

    loaded = ACTRelativeRTCAllDelaysPolicy.from_pretrained(tmp_path).eval()

    observation = _observation(old)
    assert loaded.config.use_state_token is False
    assert torch.equal(loaded.predict_action_chunk(observation), old.predict_action_chunk(observation))


def test_a_policy_that_reads_no_state_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        tiny_config(predict_relative_actions=False, use_state_token=False).validate_features()

    assert "reads no 'observation.state'" in caplog.text


def test_without_a_state_feature_there_is_no_state_token():
    config = tiny_config(
        predict_relative_actions=False,
        input_features={OBS_ENV_STATE: PolicyFeature(type=FeatureType.ENV, shape=(3,))},
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(4,))},
    )
    policy = ACTRelativeRTCAllDelaysPolicy(config)

    assert not config.has_state_token
    assert not hasattr(policy.model, "encoder_robot_state_input_proj")


def test_training_from_a_dataset_derives_the_state_statistics(synthetic_dataset):
    policy = make_policy_from_dataset(tiny_dataset_config(), ds_meta=synthetic_dataset.meta)

    columns = read_dataset_columns(synthetic_dataset.meta.root, [STATE_KEY])
    state = torch.from_numpy(columns[STATE_KEY]).float()
    assert torch.allclose(policy.state_normalizer.mean, state.mean(0), atol=1e-5)
    assert torch.allclose(policy.state_normalizer.std, state.std(0, unbiased=False), atol=1e-5)
