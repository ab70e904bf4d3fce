"""Blending at the join (`rtc_blend_steps`): a new chunk takes over from the previous one gradually.

Both chunks are in the space `predict_action_chunk` returns, which is where they are blended: absolute
actions with relative actions on, normalized actions with them off. Absolute, not relative: two chunks are
relative to the states at their own observations, so their relative actions for one step have different
origins and mixing them would shift the action by a fraction of the state's change. Normalized actions blend
like robot actions: the postprocessor's normalization is affine per dimension and the weights sum to 1.
"""

import torch
from torch import Tensor


def default_blend_steps(overlap: int) -> int:
    """The blend of `rtc_blend_steps=None` when consecutive chunks predict `overlap` common steps past the
    join: half of them, so the new chunk has fully taken over midway through the overlap, as in the studies
    that measured it (chunk 18 executing 9, 4 blended steps). 0 when nothing overlaps."""
    return max(overlap, 0) // 2


def chunk_overlap(chunk_size: int, n_action_steps: int) -> int:
    """The steps consecutive chunks of `select_action`'s schedule both predict past the join: a chunk
    predicts `chunk_size - n_action_steps` steps past the ones it executes, and the next chunk executes
    `n_action_steps` of them at most."""
    return min(chunk_size - n_action_steps, n_action_steps)


def blend_join(chunk: Tensor, previous: Tensor, join: int, blend_steps: int) -> Tensor:
    """`chunk` [B, T, A] with its rows `join + i` mixed with the same rows of `previous` [B, T', A], the
    previous chunk's actions for the same steps, over the first k = min(`blend_steps`, the rows both have)
    rows: `w_i * previous + (1 - w_i) * chunk` with w_i = (k - i) / (k + 1), so the new chunk contributes
    from i = 0 and alone from i = k. A shorter overlap (discard mode under a long delay drops rows of the
    previous chunk) gives a shorter fade rather than a jump where the previous chunk ends. Rows before
    `join` and past the blend are returned as they are."""
    n_rows = max(0, min(join + blend_steps, chunk.shape[1], previous.shape[1]) - join)
    if n_rows == 0:
        return chunk
    rows = slice(join, join + n_rows)
    steps = torch.arange(n_rows, dtype=chunk.dtype, device=chunk.device)
    weight = ((n_rows - steps) / (n_rows + 1)).view(1, n_rows, 1)  # [1, rows, 1]: one per step
    blended = weight * previous[:, rows].to(chunk) + (1 - weight) * chunk[:, rows]
    return torch.cat([chunk[:, :join], blended, chunk[:, join + n_rows :]], dim=1)
