"""`rtc_delays_per_sample` (K): K distinct delays per sample, drawn per sample, through the all-delays
expansion."""

import pytest
import torch
from conftest import make_batch, make_policy

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCPolicy
from lerobot_policy_act_rtc_alldelays.delays import draw_delays


def _loss_and_grads(policy, batch, seed: int = 123):
    policy.train()
    torch.manual_seed(seed)
    loss, loss_dict = policy.forward(batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return loss, loss_dict, grads


@pytest.mark.parametrize("attention", ["full", "shared_observation"])
def test_k_equal_to_every_delay_is_bit_exact_with_all_delays(attention):
    every = make_policy(rtc_prefix_attention=attention, dropout=0.1)
    n_delays = every.config.n_delays
    k_all = make_policy(rtc_prefix_attention=attention, dropout=0.1, rtc_delays_per_sample=n_delays)
    k_all.load_state_dict(every.state_dict())
    batch = make_batch(every.config, batch_size=3)

    loss, loss_dict, grads = _loss_and_grads(every, batch)
    k_loss, k_loss_dict, k_grads = _loss_and_grads(k_all, batch)

    assert torch.equal(loss, k_loss)
    assert loss_dict == k_loss_dict
    assert grads.keys() == k_grads.keys()
    assert all(torch.equal(grads[name], k_grads[name]) for name in grads)


@pytest.mark.parametrize("attention", ["full", "shared_observation"])
def test_each_drawn_delays_loss_equals_a_single_delay_forward(attention):
    policy = make_policy(rtc_prefix_attention=attention, rtc_delays_per_sample=2)
    base = ACTRelativeRTCPolicy(policy.config)
    base.load_state_dict(policy.state_dict())
    batch = make_batch(policy.config, batch_size=1, pad_tail=0)

    _, loss_dict, _ = _loss_and_grads(policy, batch)

    drawn = sorted(int(key.rsplit("_", 1)[1]) for key in loss_dict if key.startswith("l1_loss_delay_"))
    assert len(drawn) == 2
    for delay in drawn:
        base.train()
        _, single = base.forward(batch, delays=torch.tensor([delay]))
        assert loss_dict[f"l1_loss_delay_{delay}"] == pytest.approx(single["l1_loss"], abs=1e-6)


def test_the_loss_weights_each_drawn_delay_by_its_delay_loss_weight():
    weights = [1.0, 0.0, 0.0, 3.0]
    policy = make_policy(rtc_delays_per_sample=2, rtc_delay_loss_weights=weights)
    batch = make_batch(policy.config, batch_size=1, pad_tail=0)

    loss, loss_dict, _ = _loss_and_grads(policy, batch)

    normalized = torch.tensor(weights) / torch.tensor(weights).mean()
    drawn = [int(key.rsplit("_", 1)[1]) for key in loss_dict if key.startswith("l1_loss_delay_")]
    expected = sum(normalized[d] * loss_dict[f"l1_loss_delay_{d}"] for d in drawn) / len(drawn)
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)


def test_the_draws_are_distinct_per_sample_and_cover_every_delay_uniformly():
    torch.manual_seed(0)
    n_samples, n_delays, n_drawn = 9000, 9, 3

    drawn = draw_delays(n_samples, n_delays, n_drawn, torch.device("cpu"))

    assert drawn.shape == (n_samples, n_drawn)
    assert all(len(set(row)) == n_drawn for row in drawn.tolist())
    share = torch.bincount(drawn.flatten(), minlength=n_delays) / drawn.numel()
    assert torch.allclose(share, torch.full((n_delays,), 1 / n_delays), atol=0.01)


def test_k_delays_run_the_transformer_on_k_sequences_per_sample():
    policy = make_policy(rtc_delays_per_sample=2)
    encoder_inputs = []
    policy.model.encoder.register_forward_pre_hook(lambda module, args: encoder_inputs.append(args[0]))

    _loss_and_grads(policy, make_batch(policy.config, batch_size=3))

    assert encoder_inputs[0].shape[1] == 3 * 2


@pytest.mark.parametrize("k", [0, 5, 1.5])
def test_k_outside_one_to_every_delay_is_refused(k):
    with pytest.raises(ValueError, match="rtc_delays_per_sample"):
        make_policy(rtc_delays_per_sample=k)
