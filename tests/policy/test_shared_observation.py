"""Shared-observation attention: all delays of a sample packed in one sequence under block masks."""

import pytest
import torch
from conftest import make_batch, make_policy, tiny_config

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCPolicy
from lerobot_policy_act_rtc_alldelays.attention import shared_observation_masks

SHARED = dict(rtc_prefix_attention="shared_observation", dropout=0.0)


def _all_delay_predictions(policy, batch):
    window = policy.to_model_space(batch["action"], batch["observation.state"])
    prefix = window[:, : policy.config.rtc_max_delay]
    every_delay = torch.arange(policy.config.n_delays).expand(len(prefix), -1)  # [B, D]
    return policy.model(batch, prefix, every_delay)[0], prefix  # [B, D, chunk, A]


@pytest.mark.parametrize("use_vae", [False, True])
def test_packed_prediction_at_each_delay_equals_the_single_delay_forward(use_vae):
    policy = make_policy(use_vae=use_vae, **SHARED)
    policy.eval()  # the VAE latent is then zero in both forwards, as at inference
    batch = make_batch(policy.config, batch_size=3)

    packed, prefix = _all_delay_predictions(policy, batch)

    for delay in range(policy.config.n_delays):
        single = policy.model(batch, prefix, torch.full((3,), delay))[0]
        assert torch.allclose(packed[:, delay], single, atol=1e-5), delay


def test_inference_computes_the_function_trained_at_that_delay():
    policy = make_policy(**SHARED)
    policy.eval()
    batch = make_batch(policy.config, batch_size=2)
    packed, _ = _all_delay_predictions(policy, batch)
    state = batch["observation.state"]
    chunk = policy.predict_action_chunk(
        {k: v for k, v in batch.items() if k.startswith("observation.")},
        delay=2,
        action_prefix=batch["action"][:, :2],
    )
    assert torch.allclose(chunk, packed[:, 2] + state[:, None], atol=1e-5)


def test_observation_tokens_go_through_the_encoder_once_per_sample():
    policy = make_policy(**SHARED)
    policy.train()
    encoder_inputs = []
    policy.model.encoder.register_forward_pre_hook(lambda module, args: encoder_inputs.append(args[0]))

    policy.forward(make_batch(policy.config, batch_size=3))

    n_observation = 2 * 2 + 1  # a 64 px image gives a 2x2 ResNet feature map; then the state token
    n_delays, prefix_length = policy.config.n_delays, policy.config.rtc_max_delay
    assert encoder_inputs[0].shape == (n_observation + n_delays * prefix_length, 3, policy.config.dim_model)


def test_observation_tokens_do_not_see_the_prefix():
    policy = make_policy(**SHARED)
    policy.eval()
    batch = make_batch(policy.config, batch_size=2)
    outputs = []
    policy.model.encoder.register_forward_hook(lambda module, args, out: outputs.append(out))
    prefix = torch.randn(2, policy.config.rtc_max_delay, 4)
    policy.model(batch, prefix, torch.full((2,), 3))
    policy.model(batch, prefix + 1.0, torch.full((2,), 3))
    assert torch.allclose(outputs[0][:4], outputs[1][:4], atol=1e-6)
    assert not torch.allclose(outputs[0][4:], outputs[1][4:])


def test_masks_let_each_group_see_the_observation_and_only_itself():
    encoder, decoder_self, decoder_cross = shared_observation_masks(2, 1, 2, 2, torch.device("cpu"))
    blocked = True
    assert encoder.tolist() == [
        [False, False, blocked, blocked],
        [False, False, blocked, blocked],
        [False, False, False, blocked],
        [False, False, blocked, False],
    ]
    assert (
        decoder_self.tolist()
        == [[False, False, blocked, blocked]] * 2 + [[blocked, blocked, False, False]] * 2
    )
    assert (
        decoder_cross.tolist() == [[False, False, False, blocked]] * 2 + [[False, False, blocked, False]] * 2
    )


def test_single_delay_training_keeps_working_and_matches_the_base():
    overrides = dict(rtc_train_all_delays=False, use_vae=True, **SHARED)
    policy = make_policy(**overrides)
    base = ACTRelativeRTCPolicy(tiny_config(**overrides))
    base.load_state_dict(policy.state_dict())
    batch = make_batch(policy.config)
    losses = []
    for model in (base, policy):
        model.train()
        torch.manual_seed(7)
        losses.append(model.forward(batch)[0])
    assert torch.equal(losses[0], losses[1])


def test_all_delays_loss_in_shared_mode_is_the_mean_of_single_delay_losses():
    policy = make_policy(**SHARED, rtc_delay0_loss_share=None)  # every delay weighted alike
    policy.train()
    batch = make_batch(policy.config, batch_size=4)
    loss, loss_dict = policy.forward(batch)
    single = [policy.forward(batch, delays=torch.full((4,), d))[0] for d in range(policy.config.n_delays)]
    assert loss.item() == pytest.approx(torch.stack(single).mean().item(), rel=1e-5)
    for delay, value in enumerate(single):
        assert loss_dict[f"l1_loss_delay_{delay}"] == pytest.approx(value.item(), rel=1e-5)


def test_attention_weights_keep_act_state_dict_names():
    keys = make_policy().state_dict().keys()
    assert "model.encoder.layers.0.self_attn.in_proj_weight" in keys
    assert "model.decoder.layers.0.multihead_attn.out_proj.weight" in keys
