"""Prefix robustness trained in at no inference cost: `rtc_prefix_dropout` (a learned mask token that keeps
the delay visible), `rtc_prefix_noise_std` and `rtc_prefix_self_condition`."""

import pytest
import torch
from conftest import make_batch, make_policy

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCPolicy

ATTENTION_PATHS = [
    pytest.param(ACTRelativeRTCPolicy, "full", id="one_delay"),
    pytest.param(None, "full", id="batch_expansion"),
    pytest.param(None, "shared_observation", id="shared_observation"),
]


def _prefix_tokens(policy, delays: torch.Tensor) -> torch.Tensor:
    """The prefix tokens [N, P, dim] of a random prefix at `delays` [N]."""
    config = policy.config
    prefix = torch.randn(len(delays), config.rtc_max_delay, config.action_feature.shape[0])
    return policy.model.encode_prefix(prefix, delays).transpose(0, 1)


def test_a_hidden_prefix_shows_the_mask_token_up_to_the_delay_and_pad_tokens_after_it():
    policy = make_policy(rtc_prefix_dropout=0.999).train()
    torch.manual_seed(0)
    delays = torch.tensor([1, 2, 3])

    tokens = _prefix_tokens(policy, delays)

    mask, pad = policy.model.prefix_mask_embed.weight[0], policy.model.prefix_pad_embed.weight[0]
    assert not torch.equal(mask, pad)
    for row, delay in enumerate(delays.tolist()):
        assert all(torch.equal(token, mask) for token in tokens[row, :delay])
        assert all(torch.equal(token, pad) for token in tokens[row, delay:])


def test_prefix_dropout_hides_about_the_configured_share_of_prefixes():
    policy = make_policy(rtc_prefix_dropout=0.3).train()
    torch.manual_seed(0)
    delays = torch.full((4000,), 2)

    tokens = _prefix_tokens(policy, delays)

    hidden = (tokens[:, 0] == policy.model.prefix_mask_embed.weight[0]).all(dim=-1).float().mean()
    assert 0.27 < hidden < 0.33


@pytest.mark.parametrize("field", ["rtc_prefix_dropout", "rtc_prefix_noise_std", "rtc_prefix_self_condition"])
def test_the_remedies_change_nothing_at_inference(field):
    plain = make_policy().eval()
    remedied = make_policy(**{field: 0.5}).eval()
    remedied.load_state_dict(plain.state_dict(), strict=False)
    batch = make_batch(plain.config, batch_size=2)
    observation = {key: value for key, value in batch.items() if key.startswith("observation.")}
    prefix = batch["action"][:, :2]

    expected = plain.predict_action_chunk(observation, delay=2, action_prefix=prefix)
    assert torch.equal(remedied.predict_action_chunk(observation, delay=2, action_prefix=prefix), expected)


def test_prefix_noise_perturbs_the_prefix_in_training_only():
    policy = make_policy(rtc_prefix_noise_std=0.5)
    delays = torch.tensor([3, 3])
    prefix = torch.randn(2, 3, 4)

    policy.eval()
    first, second = policy.model.encode_prefix(prefix, delays), policy.model.encode_prefix(prefix, delays)
    assert torch.equal(first, second)
    policy.train()
    first, second = policy.model.encode_prefix(prefix, delays), policy.model.encode_prefix(prefix, delays)
    assert not torch.equal(first, second)


@pytest.mark.parametrize(("policy_class", "attention"), ATTENTION_PATHS)
def test_the_mask_token_is_trained_on_every_training_path(policy_class, attention):
    overrides = dict(rtc_prefix_dropout=0.5, rtc_prefix_attention=attention)
    policy = make_policy(**overrides) if policy_class is None else make_policy(policy_class, **overrides)
    policy.train()
    torch.manual_seed(0)

    loss, _ = policy.forward(make_batch(policy.config, batch_size=8))
    loss.backward()

    assert policy.model.prefix_mask_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("rtc_prefix_dropout", 1.0), ("rtc_prefix_noise_std", -0.1), ("rtc_prefix_self_condition", 1.5)],
)
def test_out_of_range_remedy_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        make_policy(**{field: value})


@pytest.mark.parametrize(("policy_class", "attention"), ATTENTION_PATHS)
@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_a_self_conditioned_prefix_is_the_networks_own_delay_zero_prediction(
    policy_class, attention, probability
):
    overrides = dict(rtc_prefix_self_condition=probability, rtc_prefix_attention=attention, dropout=0.0)
    policy = make_policy(**overrides) if policy_class is None else make_policy(policy_class, **overrides)
    policy.train()
    batch = make_batch(policy.config, batch_size=3)
    seen = []
    encode_prefix = policy.model.encode_prefix
    policy.model.encode_prefix = lambda prefix, delays: seen.append(prefix) or encode_prefix(prefix, delays)

    loss, _ = policy.forward(batch)
    loss.backward()
    # The last call is the trained pass; its sequences [B * K, P, A] are each sample's delays in turn.
    trained_prefix = seen[-1].unflatten(0, (3, -1))[:, 0]

    window, _ = policy._training_window(batch)
    dataset_prefix = window[:, : policy.config.rtc_max_delay]
    inputs = policy.model_inputs(batch)
    delay_zero = torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad():  # the delay-0 chunk, under the attention the policy trains with
        tokens, positions = policy.model.encode_observation(inputs)
        if attention == "shared_observation":
            own = policy.model.predict_grouped(tokens, positions, dataset_prefix, delay_zero)[0][:, 0]
        else:
            own = policy.model.predict_from_observation(tokens, positions, dataset_prefix, delay_zero[:, 0])
            own = own[0]
    own = own[:, : policy.config.rtc_max_delay]
    torch.testing.assert_close(trained_prefix, own if probability == 1.0 else dataset_prefix)
