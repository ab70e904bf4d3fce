"""ACT's training losses, per chunk and per latent, and their reduction."""

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor


def masked_l1(predicted: Tensor, targets: Tensor, targets_is_pad: Tensor, action_weight: Tensor) -> Tensor:
    """L1 per chunk: [..., chunk, A] -> [...], padded targets counting as zero error (as in ACT)."""
    error = F.l1_loss(predicted, targets, reduction="none") * action_weight
    return (error * ~targets_is_pad.unsqueeze(-1)).mean(dim=(-2, -1))


def kl_divergence(mu: Tensor, log_sigma_x2: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent: [N, latent] -> [N]."""
    return (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1)


def reduce_loss(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got '{reduction}'.")


def delay_loss_weights(n_delays: int, delay0_share: float | None, explicit: list[float] | None) -> Tensor:
    """[D] weight of each delay's L1 in the loss, mean 1 (so the loss scale and the learning rate do not
    depend on them): `explicit` when given, else delay 0 gets `delay0_share` of the total and the other
    delays the rest equally; every delay alike when the share is None or there is only delay 0."""
    if explicit is not None:
        weights = torch.tensor(explicit, dtype=torch.float32)
    elif delay0_share is None or n_delays == 1:
        weights = torch.ones(n_delays)
    else:
        weights = torch.full((n_delays,), (1 - delay0_share) / (n_delays - 1))
        weights[0] = delay0_share
    return weights / weights.mean()
