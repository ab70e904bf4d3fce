"""The base policy: one random delay per sample, relative actions, prefix and target windows."""

import pytest
import torch
from conftest import make_batch, make_policy, tiny_config

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCPolicy
from lerobot_policy_act_rtc_alldelays.dataset_derived import action_weights_from_names
from lerobot_policy_act_rtc_alldelays.delays import delay_windows


def test_delay_windows_are_the_chunks_after_each_prefix_as_a_view():
    window = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # rtc_max_delay 3, chunk 4
    targets = delay_windows(window, chunk_size=4)
    assert targets.shape == (2, 4, 4, 3)
    for delay in range(4):
        assert torch.equal(targets[:, delay], window[:, delay : delay + 4])
    assert targets.data_ptr() == window.data_ptr()


def test_base_policy_builds_from_the_registered_config_and_loads_its_state_dict():
    registered = make_policy()
    base = ACTRelativeRTCPolicy(registered.config)
    base.load_state_dict(registered.state_dict())
    for name, value in registered.state_dict().items():
        assert torch.equal(base.state_dict()[name], value)


def test_training_draws_one_uniform_delay_per_sample_with_randint(monkeypatch):
    policy = make_policy(policy_class=ACTRelativeRTCPolicy)
    policy.train()
    calls = []
    real_randint = torch.randint

    def recording_randint(low, high, size, **kwargs):
        calls.append((low, high, tuple(size)))
        return real_randint(low, high, size, **kwargs)

    monkeypatch.setattr(torch, "randint", recording_randint)
    policy.forward(make_batch(policy.config, batch_size=3))
    assert calls == [(0, policy.config.rtc_max_delay + 1, (3,))]


def test_targets_of_delay_d_start_right_after_the_prefix():
    policy = make_policy(policy_class=ACTRelativeRTCPolicy)
    policy.train()
    batch = make_batch(policy.config, batch_size=2, pad_tail=0)
    seen = {}

    def capture(module, args):
        seen["prefix"], seen["delays"], seen["targets"] = args[1], args[2], args[3]

    policy.model.register_forward_pre_hook(capture)
    policy.forward(batch, delays=torch.tensor([0, 2]))

    relative = batch["action"] - batch["observation.state"].unsqueeze(1)  # unit stats: plain differences
    assert torch.allclose(seen["targets"][0], relative[0, 0:5])
    assert torch.allclose(seen["targets"][1], relative[1, 2:7])
    assert torch.allclose(seen["prefix"], relative[:, :3])
    assert seen["delays"].tolist() == [0, 2]


def test_prefix_positions_at_or_beyond_the_delay_become_the_pad_embedding():
    policy = make_policy()
    action_prefix = torch.randn(4, 3, 4)
    tokens = policy.model.encode_prefix(action_prefix, torch.tensor([0, 1, 2, 3]))  # [3, 4, dim]
    pad = policy.model.prefix_pad_embed.weight[0]
    projected = policy.model.prefix_input_proj(action_prefix).transpose(0, 1)
    for sample, delay in enumerate(range(4)):
        for position in range(3):
            expected = projected[position, sample] if position < delay else pad
            assert torch.equal(tokens[position, sample], expected)


def test_relative_actions_round_trip_through_the_normalizer():
    policy = make_policy()
    policy.relative_action_normalizer.set_stats(
        torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([2.0, 1.0, 0.5, 3.0])
    )
    actions, state = torch.randn(2, 5, 4), torch.randn(2, 4)
    relative = policy.to_model_space(actions, state)
    assert torch.allclose(
        relative,
        (actions - state[:, None] - torch.tensor([0.1, -0.2, 0.3, 0.0])) / torch.tensor([2.0, 1.0, 0.5, 3.0]),
    )
    assert torch.allclose(policy.to_action_space(relative, state), actions, atol=1e-6)


def test_padded_targets_do_not_contribute_to_the_loss():
    policy = make_policy(policy_class=ACTRelativeRTCPolicy)
    policy.train()
    batch = make_batch(policy.config, batch_size=2, pad_tail=3)
    delays = torch.tensor([3, 3])
    loss, _ = policy.forward(batch, delays=delays)
    batch["action"][-1, -3:] += 100.0  # change only padded actions
    changed, _ = policy.forward(batch, delays=delays)
    assert torch.equal(loss, changed)


def test_reduction_none_returns_per_sample_losses():
    policy = make_policy(policy_class=ACTRelativeRTCPolicy, use_vae=True)
    policy.train()
    torch.manual_seed(0)
    per_sample, loss_dict = policy.forward(make_batch(policy.config, batch_size=3), reduction="none")
    assert per_sample.shape == (3,)
    assert set(loss_dict) == {"l1_loss", "kld_loss"}
    assert all(type(value) is float for value in loss_dict.values())


def test_an_action_window_of_the_wrong_length_is_a_clear_error():
    policy = make_policy()
    batch = make_batch(policy.config)
    batch["action"] = batch["action"][:, :5]
    with pytest.raises(ValueError, match=r"window of rtc_max_delay \+ chunk_size = 8 actions"):
        policy.forward(batch)


def test_stats_of_the_wrong_shape_are_a_clear_error():
    policy = make_policy()
    with pytest.raises(ValueError, match="action has 4 dimensions"):
        policy.relative_action_normalizer.set_stats(torch.zeros(6), torch.ones(6))


def test_predicting_without_stats_is_a_clear_error():
    torch.manual_seed(0)
    policy = ACTRelativeRTCPolicy(tiny_config())  # neither trained from a dataset nor loaded
    with pytest.raises(RuntimeError, match="relative-action statistics are missing"):
        policy.predict_action_chunk(make_batch(policy.config))


def test_action_loss_weights_follow_the_dataset_action_names():
    feature = {"shape": (3,), "names": ["shoulder.pos", "elbow.pos", "gripper.pos"]}
    assert action_weights_from_names({"gripper.pos": 2.0}, feature).tolist() == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"\['wrist.pos'\] are not action names"):
        action_weights_from_names({"wrist.pos": 2.0}, feature)


def test_action_loss_weights_scale_each_dimensions_error():
    policy = make_policy(policy_class=ACTRelativeRTCPolicy)
    policy.train()
    batch = make_batch(policy.config)
    delays = torch.zeros(3, dtype=torch.long)
    loss, _ = policy.forward(batch, delays=delays)
    policy.action_loss_weight.fill_(2.0)
    doubled, _ = policy.forward(batch, delays=delays)
    assert doubled.item() == pytest.approx(2 * loss.item(), rel=1e-6)


def test_the_backbone_has_its_own_learning_rate():
    policy = make_policy(optimizer_lr_backbone=1e-6)
    rest, backbone = policy.get_optim_params()
    backbone_ids = {id(p) for p in policy.model.backbone.parameters()}
    assert backbone["lr"] == 1e-6
    assert {id(p) for p in backbone["params"]} == backbone_ids
    assert not backbone_ids & {id(p) for p in rest["params"]}


def test_loading_stats_that_are_missing_is_caught_after_a_successful_check():
    policy = make_policy()
    policy.predict_action_chunk(make_batch(policy.config))  # checks the unit stats once
    state = policy.state_dict()
    for name in ("relative_action_normalizer.mean", "relative_action_normalizer.std"):
        state[name] = torch.full_like(state[name], float("nan"))
    policy.load_state_dict(state)
    with pytest.raises(RuntimeError, match="relative-action statistics are missing"):
        policy.predict_action_chunk(make_batch(policy.config))
