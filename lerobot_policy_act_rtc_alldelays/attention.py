"""Attention masks for LeRobot's ACT layers, and the shared-observation block masks.

ACT's encoder and decoder layers call their `nn.MultiheadAttention` modules without a mask and discard the
attention weights. Swapping those modules for `MaskedMultiheadAttention` (same weights, same state-dict
keys) lets a caller set a mask around a forward pass, and asking for no weights puts PyTorch on the fused
`scaled_dot_product_attention` path. ACT's layers themselves are reused unchanged.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class MaskedMultiheadAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` that applies `self.attn_mask` (None: no mask) and returns no weights."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attn_mask: Tensor | None = None

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None, **kwargs
    ) -> tuple[Tensor, None]:
        return super().forward(
            query, key, value, key_padding_mask=key_padding_mask, attn_mask=self.attn_mask, need_weights=False
        )


def use_masked_attention(module: nn.Module) -> None:
    """Swaps every `nn.MultiheadAttention` below `module` for a `MaskedMultiheadAttention` (same weights)."""
    for name, child in module.named_children():
        if type(child) is nn.MultiheadAttention:
            masked = MaskedMultiheadAttention(child.embed_dim, child.num_heads, dropout=child.dropout)
            masked.load_state_dict(child.state_dict())
            setattr(module, name, masked)
        else:
            use_masked_attention(child)


@contextmanager
def attention_masks(
    encoder: nn.Module,
    decoder: nn.Module,
    encoder_mask: Tensor,
    decoder_self_mask: Tensor,
    decoder_cross_mask: Tensor,
) -> Iterator[None]:
    """Applies the masks to every layer of an ACT encoder and decoder for the duration of the block."""
    settings = [(layer.self_attn, encoder_mask) for layer in encoder.layers]
    for layer in decoder.layers:
        settings += [(layer.self_attn, decoder_self_mask), (layer.multihead_attn, decoder_cross_mask)]
    try:
        for attention, mask in settings:
            attention.attn_mask = mask
        yield
    finally:
        for attention, _ in settings:
            attention.attn_mask = None


def shared_observation_masks(
    n_observation: int, group_length: int, n_groups: int, chunk_size: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Boolean masks (True: may not attend) for one observation block followed by `n_groups` delay groups.

    Encoder sequence: `n_observation` tokens, then group g's `group_length` tokens at
    `n_observation + g * group_length`. Decoder sequence: group g's `chunk_size` queries at `g * chunk_size`.
    Observation tokens see only observation tokens, so they are the same for every group; a group's tokens
    and queries see the observation and their own group. Returns the encoder self-attention mask [S, S],
    the decoder self-attention mask [G*chunk, G*chunk] and the cross-attention mask [G*chunk, S].
    """
    observation = -1
    key_group = torch.cat(
        [
            torch.full((n_observation,), observation, device=device),
            torch.arange(n_groups, device=device).repeat_interleave(group_length),
        ]
    )
    query_group = torch.arange(n_groups, device=device).repeat_interleave(chunk_size)
    sees_observation = key_group.unsqueeze(0) == observation
    encoder_allowed = sees_observation | (key_group.unsqueeze(1) == key_group.unsqueeze(0))
    decoder_self_allowed = query_group.unsqueeze(1) == query_group.unsqueeze(0)
    decoder_cross_allowed = sees_observation | (query_group.unsqueeze(1) == key_group.unsqueeze(0))
    return ~encoder_allowed, ~decoder_self_allowed, ~decoder_cross_allowed
