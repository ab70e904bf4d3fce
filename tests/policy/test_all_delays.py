"""All-delays training: every delay of every sample in one forward pass (issue: all-delays training)."""

import pytest
import torch
from conftest import make_batch, make_policy, set_unit_stats, tiny_config
from lerobot.configs.types import FeatureType, PolicyFeature
from torch.utils._python_dispatch import TorchDispatchMode

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy, ACTRelativeRTCPolicy
from lerobot_policy_act_rtc_alldelays.losses import delay_loss_weights


class RecordShapes(TorchDispatchMode):
    """Records the shape of every tensor any ATen op produces."""

    def __init__(self):
        super().__init__()
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.shapes.add(tuple(tensor.shape))
        return out


def test_backbone_runs_once_on_the_batch_images_without_copying_them():
    policy = make_policy()
    policy.train()
    batch = make_batch(policy.config, batch_size=3)
    image = batch["observation.images.wrist"]
    backbone_inputs = []
    policy.model.backbone.register_forward_pre_hook(lambda module, args: backbone_inputs.append(args[0]))

    with RecordShapes() as recorder:
        loss, _ = policy.forward(batch)
        loss.backward()

    assert len(backbone_inputs) == 1
    assert backbone_inputs[0].shape[0] == 3
    assert backbone_inputs[0].data_ptr() == image.data_ptr()
    n_delays = policy.config.n_delays
    channels, height, width = image.shape[1:]
    assert (3 * n_delays, channels, height, width) not in recorder.shapes
    assert (3, n_delays, channels, height, width) not in recorder.shapes


def test_flag_off_reproduces_the_base_policy_bit_for_bit():
    overrides = dict(use_vae=True, dropout=0.1, rtc_train_all_delays=False)
    all_delays = make_policy(**overrides)
    base = ACTRelativeRTCPolicy(tiny_config(**overrides))
    base.load_state_dict(all_delays.state_dict())
    batch = make_batch(all_delays.config)

    results = []
    for policy in (base, all_delays):
        policy.train()
        torch.manual_seed(123)
        loss, loss_dict = policy.forward(batch)
        loss.backward()
        after = torch.rand(1)  # the same random stream must remain: same number of draws
        grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
        results.append((loss, loss_dict, grads, after))

    (base_loss, base_dict, base_grads, base_after), (loss, loss_dict, grads, after) = results
    assert torch.equal(base_loss, loss)
    assert base_dict == loss_dict
    assert base_grads.keys() == grads.keys()
    for name in grads:
        assert torch.equal(base_grads[name], grads[name]), name
    assert torch.equal(base_after, after)


def test_with_every_delay_weighted_alike_the_loss_is_the_mean_of_the_base_losses_at_each_delay():
    policy = make_policy(use_vae=False, dropout=0.0, rtc_delay0_loss_share=None)
    base = ACTRelativeRTCPolicy(policy.config)
    base.load_state_dict(policy.state_dict())
    policy.train()
    base.train()
    batch = make_batch(policy.config, batch_size=4)

    loss, loss_dict = policy.forward(batch)

    base_losses = []
    for delay in range(policy.config.n_delays):
        delays = torch.full((4,), delay)
        base_loss, _ = base.forward(batch, delays=delays)
        base_losses.append(base_loss)
        assert loss_dict[f"l1_loss_delay_{delay}"] == pytest.approx(base_loss.item(), rel=1e-5, abs=1e-6)
    assert loss.item() == pytest.approx(torch.stack(base_losses).mean().item(), rel=1e-5, abs=1e-6)
    assert loss_dict["l1_loss"] == pytest.approx(loss.item(), rel=1e-6)


def test_vae_encodes_each_delays_targets_and_kl_averages_over_all_virtual_samples():
    policy = make_policy(use_vae=True)
    policy.train()
    batch = make_batch(policy.config, batch_size=2)
    latent_params = []
    policy.model.vae_encoder_latent_output_proj.register_forward_hook(
        lambda module, args, out: latent_params.append(out)
    )

    loss, loss_dict = policy.forward(batch)

    n_virtual = 2 * policy.config.n_delays
    assert latent_params[0].shape[0] == n_virtual
    # Different delays see different target chunks, hence different latent distributions.
    assert not torch.allclose(latent_params[0][0], latent_params[0][1])
    mu, log_sigma_x2 = latent_params[0].chunk(2, dim=-1)
    expected_kld = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1).mean()
    assert loss_dict["kld_loss"] == pytest.approx(expected_kld.item(), rel=1e-5)
    assert loss.item() == pytest.approx(
        loss_dict["l1_loss"] + policy.config.kl_weight * expected_kld.item(), rel=1e-5
    )


def test_reduction_none_returns_each_samples_loss_over_its_delays():
    policy = make_policy()
    policy.train()
    batch = make_batch(policy.config, batch_size=3)

    per_sample, _ = policy.forward(batch, reduction="none")
    mean_loss, _ = policy.forward(batch)

    assert per_sample.shape == (3,)
    assert per_sample.mean().item() == pytest.approx(mean_loss.item(), rel=1e-6)


def test_loss_dict_holds_python_floats_for_every_delay():
    policy = make_policy(use_vae=True)
    policy.train()
    _, loss_dict = policy.forward(make_batch(policy.config))
    expected = {"l1_loss", "kld_loss"} | {f"l1_loss_delay_{d}" for d in range(policy.config.n_delays)}
    assert set(loss_dict) == expected
    assert all(type(value) is float for value in loss_dict.values())


def test_gradients_through_the_expanded_path_match_finite_differences():
    config = tiny_config(
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(2,)),
            "observation.environment_state": PolicyFeature(type=FeatureType.ENV, shape=(3,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(2,))},
        chunk_size=3,
        n_action_steps=3,
        rtc_max_delay=2,
        dim_model=8,
        n_heads=2,
        dim_feedforward=8,
    )
    torch.manual_seed(0)
    policy = ACTRelativeRTCAllDelaysPolicy(config).double()
    set_unit_stats(policy)
    policy.train()
    batch = {
        k: v.double() if v.is_floating_point() else v for k, v in make_batch(config, batch_size=2).items()
    }

    def loss_of(env_state, window):
        return policy.forward({**batch, "observation.environment_state": env_state, "action": window})[0]

    inputs = (
        batch["observation.environment_state"].clone().requires_grad_(),
        batch["action"].clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-5)


def test_one_training_step_gives_every_trainable_parameter_a_gradient():
    config = tiny_config(
        use_vae=True,
        input_features={
            **tiny_config().input_features,
            "observation.environment_state": PolicyFeature(type=FeatureType.ENV, shape=(3,)),
        },
    )
    torch.manual_seed(0)
    policy = ACTRelativeRTCAllDelaysPolicy(config)
    set_unit_stats(policy)
    policy.train()

    loss, _ = policy.forward(make_batch(config))
    loss.backward()

    without_gradient = [
        name
        for name, p in policy.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert without_gradient == []


def test_zero_delay_weight_removes_that_delay_from_the_gradient():
    policy = make_policy(rtc_delay_loss_weights=[1.0, 0.0, 2.0, 1.0])
    policy.train()
    prediction_grads = []

    def keep_prediction_grad(module, args, output):
        output[0].register_hook(prediction_grads.append)

    policy.model.register_forward_hook(keep_prediction_grad)
    loss, loss_dict = policy.forward(make_batch(policy.config))
    loss.backward()

    grad = prediction_grads[0]  # [B, D, chunk, A]
    assert grad[:, 1].abs().sum() == 0
    assert all(grad[:, d].abs().sum() > 0 for d in (0, 2, 3))
    # The unweighted per-delay figure is still reported for monitoring.
    assert loss_dict["l1_loss_delay_1"] > 0


def test_delay_weights_are_normalized_to_mean_one():
    uniform = make_policy(rtc_delay0_loss_share=None)
    weighted = make_policy(rtc_delay_loss_weights=[2.0, 2.0, 2.0, 2.0])
    batch = make_batch(uniform.config)
    uniform.train()
    weighted.train()
    assert weighted.forward(batch)[0].item() == pytest.approx(uniform.forward(batch)[0].item(), rel=1e-6)


def test_by_default_delay_zero_is_half_of_the_loss_and_the_other_delays_share_the_rest():
    policy = make_policy()  # rtc_max_delay=3: delays 0..3
    policy.train()
    _, loss_dict = policy.forward(make_batch(policy.config))
    per_delay = [loss_dict[f"l1_loss_delay_{d}"] for d in range(4)]
    expected = 0.5 * per_delay[0] + 0.5 * sum(per_delay[1:]) / 3
    assert loss_dict["l1_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("n_delays", [2, 4, 9, 31])
def test_the_delay_zero_share_means_the_same_for_every_max_delay(n_delays):
    weights = delay_loss_weights(n_delays, 0.3, None)
    assert (weights[0] / weights.sum()).item() == pytest.approx(0.3)
    assert torch.allclose(weights[1:], weights[1].expand(n_delays - 1))  # the rest shared equally


def test_explicit_delay_weights_replace_the_share():
    weights = delay_loss_weights(4, 0.5, [1.0, 0.0, 2.0, 1.0])
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.0, 2.0, 1.0]))
