"""Bad configurations fail early with errors that name the field and the fix."""

import pytest
from conftest import tiny_config
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig, ACTRelativeRTCConfig


def test_the_policy_type_is_registered_and_subclasses_the_base_config():
    config_class = PreTrainedConfig.get_choice_class("act_relative_rtc_alldelays")
    assert config_class is ACTRelativeRTCAllDelaysConfig
    assert issubclass(config_class, ACTRelativeRTCConfig)


def test_action_window_covers_the_prefix_and_the_chunk_from_first_action_index():
    assert tiny_config(chunk_size=5, rtc_max_delay=3).action_delta_indices == list(range(0, 8))
    assert tiny_config(chunk_size=5, rtc_max_delay=3, first_action_index=1).action_delta_indices == list(
        range(1, 9)
    )


def test_relative_actions_leave_state_and_action_unnormalized_in_the_processors():
    mapping = tiny_config().normalization_mapping
    assert mapping["STATE"] is NormalizationMode.IDENTITY
    assert mapping["ACTION"] is NormalizationMode.IDENTITY
    assert mapping["VISUAL"] is NormalizationMode.MEAN_STD


def test_absolute_actions_are_normalized_with_the_dataset_stats():
    assert (
        tiny_config(predict_relative_actions=False).normalization_mapping["ACTION"]
        is NormalizationMode.MEAN_STD
    )


def test_relative_actions_reject_a_normalized_action():
    with pytest.raises(ValueError, match=r"normalization_mapping\['ACTION'\]` must be IDENTITY"):
        tiny_config(
            normalization_mapping={"VISUAL": NormalizationMode.MEAN_STD, "ACTION": NormalizationMode.MEAN_STD}
        )


def test_negative_max_delay_is_rejected():
    with pytest.raises(ValueError, match="rtc_max_delay` must be >= 0"):
        tiny_config(rtc_max_delay=-1)


def test_more_action_steps_than_the_chunk_is_rejected():
    with pytest.raises(ValueError, match=r"n_action_steps` \(6\) cannot exceed `chunk_size` \(5\)"):
        tiny_config(n_action_steps=6)


def test_missing_observation_state_is_rejected_with_relative_actions():
    config = tiny_config(
        input_features={"observation.images.wrist": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 64, 64))}
    )
    with pytest.raises(ValueError, match="observation.state"):
        config.validate_features()


def test_no_camera_and_no_environment_state_is_rejected():
    config = tiny_config(
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(4,))}
    )
    with pytest.raises(ValueError, match="at least one camera"):
        config.validate_features()


def test_action_and_state_of_different_sizes_are_rejected_with_relative_actions():
    config = tiny_config(output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(7,))})
    with pytest.raises(ValueError, match="action has 7 dimensions and the state 4"):
        config.validate_features()


def test_inference_delay_beyond_the_trained_delays_is_rejected_in_prefix_mode():
    with pytest.raises(ValueError, match="exceeds `rtc_max_delay`"):
        tiny_config(rtc_inference_delay=4)


def test_discard_mode_allows_delays_beyond_the_trained_ones_while_the_chunk_has_room():
    config = tiny_config(chunk_size=10, n_action_steps=5, rtc_inference_mode="discard", rtc_inference_delay=4)
    assert config.rtc_inference_delay == 4
    with pytest.raises(ValueError, match="discard mode"):
        tiny_config(chunk_size=10, n_action_steps=8, rtc_inference_mode="discard", rtc_inference_delay=4)


def test_temporal_ensembling_with_a_delay_is_rejected():
    with pytest.raises(ValueError, match="Temporal ensembling cannot be combined"):
        tiny_config(n_action_steps=1, temporal_ensemble_coeff=0.01, rtc_inference_delay=1, rtc_max_delay=3)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 1.0], "needs one weight per delay"),
        ([1.0, -1.0, 1.0, 1.0], "non-negative"),
        ([0, 0, 0, 0], "all zero"),
    ],
)
def test_bad_delay_loss_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(rtc_delay_loss_weights=weights)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_delay_loss_weights_are_rejected(bad):
    with pytest.raises(ValueError, match="`rtc_delay_loss_weights` must be finite numbers"):
        tiny_config(rtc_delay_loss_weights=[1.0, bad, 1.0, 1.0])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "2"])
def test_negative_or_non_finite_action_loss_weights_are_rejected(bad):
    with pytest.raises(ValueError, match="`action_loss_weights` must be finite, non-negative numbers"):
        tiny_config(action_loss_weights={"joint_0.pos": 2.0, "joint_1.pos": bad})


def test_zero_action_loss_weight_is_allowed():
    assert tiny_config(action_loss_weights={"joint_0.pos": 0.0}).action_loss_weights == {"joint_0.pos": 0.0}


@pytest.mark.parametrize("max_delay", [5, 6])
def test_a_max_delay_that_leaves_no_new_action_in_the_chunk_is_rejected(max_delay):
    with pytest.raises(
        ValueError, match=rf"`rtc_max_delay` \({max_delay}\) must be smaller than `chunk_size`"
    ):
        tiny_config(chunk_size=5, rtc_max_delay=max_delay)


def test_no_field_collides_with_a_name_lerobot_train_reads_from_policy_configs():
    """LeRobot 0.6's lerobot-train switches on its own relative-action processor steps when a policy config
    has a truthy `use_relative_actions`; it reads `relative_exclude_joints` and `action_feature_names` too."""
    fields = set(ACTRelativeRTCAllDelaysConfig.__dataclass_fields__)
    assert not fields & {"use_relative_actions", "relative_exclude_joints", "action_feature_names"}
    assert tiny_config(predict_relative_actions=False).predict_relative_actions is False


def test_the_shipped_defaults_are_the_ones_the_v2_study_chose():
    # results/metaworld_state_study_v2: with the state token and half of the prefixes hidden in training, the
    # policy matches ACT at delay 0 on assembly; conditioning on the prefix still loses to discarding it in
    # most delayed cells, so plain chunking is the default inference mode.
    config = ACTRelativeRTCAllDelaysConfig()
    assert config.use_state_token is True
    assert config.rtc_prefix_dropout == 0.5
    assert config.rtc_prefix_noise_std == 0.0
    assert config.rtc_delays_per_sample is None
    assert config.rtc_inference_mode == "discard"


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_a_delay_zero_share_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ValueError, match=r"`rtc_delay0_loss_share` is delay 0's share of the training loss"):
        tiny_config(rtc_delay0_loss_share=bad)


def test_by_default_a_chunk_executes_half_of_its_actions_so_that_consecutive_chunks_overlap():
    config = ACTRelativeRTCAllDelaysConfig()
    assert (config.chunk_size, config.n_action_steps, config.blend_steps) == (100, 50, 25)
