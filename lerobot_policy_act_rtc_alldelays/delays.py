"""The delays of a training sample: each delay's target chunk in the action window, a sample repeated per
delay, and the delays drawn per sample."""

import torch
from torch import Tensor


def delay_windows(window: Tensor, chunk_size: int) -> Tensor:
    """The target chunk of every delay, as a view of the action window (no copy).

    [B, W, ...] with W = rtc_max_delay + chunk_size -> [B, D, chunk_size, ...] where entry `d` is
    window[:, d : d + chunk_size].
    """
    # unfold puts the window dimension last: [B, D, ..., chunk_size].
    return window.unfold(1, chunk_size, 1).movedim(-1, 2)


def repeat_per_delay(x: Tensor, n_delays: int, batch_dim: int = 0) -> Tensor:
    """Each sample once per delay: [..., B, ...] (B at `batch_dim`) -> [..., B*D, ...], sample b's copy for
    delay d at b*D + d. The repeat is a stride-0 `expand` view; `flatten` copies only where it must."""
    expanded = x.unsqueeze(batch_dim + 1)
    shape = list(expanded.shape)
    shape[batch_dim + 1] = n_delays
    return expanded.expand(shape).flatten(batch_dim, batch_dim + 1)


def draw_delays(batch_size: int, n_delays: int, n_drawn: int, device: torch.device) -> Tensor:
    """[B, K] distinct delays per sample, uniformly over the K-subsets of 0..n_delays-1. K = n_delays gives
    every delay in order, [0, 1, ..., D-1] for each sample, and draws no random numbers."""
    every_delay = torch.arange(n_delays, device=device).expand(batch_size, -1)  # [B, D]
    if n_drawn == n_delays:
        return every_delay
    return torch.rand(batch_size, n_delays, device=device).argsort(dim=1)[:, :n_drawn]
