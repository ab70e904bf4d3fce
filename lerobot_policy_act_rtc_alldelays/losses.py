"""ACT's training losses, per chunk and per latent, and their reduction."""

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
