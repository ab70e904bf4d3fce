"""All-delays training: every delay `0..rtc_max_delay` of every sample in one forward pass.

The backbone runs once on the B real samples. The observation tokens it yields are then expanded to
B * D virtual samples (D = rtc_max_delay + 1) with `expand` views, so no image-sized tensor is copied; only
the small post-backbone tokens are materialised when the transformer needs them contiguous.
"""

import torch
from torch import Tensor

from .configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from .modeling_act_relative_rtc import (
    ACTRelativeRTC,
    ACTRelativeRTCPolicy,
    delay_windows,
    kl_divergence,
    masked_l1,
    reduce_loss,
    repeat_per_delay,
)


class ACTRelativeRTCAllDelays(ACTRelativeRTC):
    def forward(
        self,
        batch: dict[str, Tensor],
        action_prefix: Tensor,
        delays: Tensor | None,
        targets: Tensor | None = None,
        targets_is_pad: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """With `delays`, the base model's forward. With `delays=None`, every delay of every sample:

        action_prefix [B, rtc_max_delay, A] (shared by the delays of a sample, masked per delay),
        targets [B, D, chunk, A] and targets_is_pad [B, D, chunk] (VAE only)
        -> actions [B, D, chunk, A] and (mu, log sigma^2) each [B * D, latent] or None.
        """
        if delays is not None:
            return super().forward(batch, action_prefix, delays, targets, targets_is_pad)
        observation_tokens, observation_positions = self.encode_observation(batch)  # [S, B, dim]
        batch_size = observation_tokens.shape[1]
        n_delays = self.config.n_delays
        all_delays = torch.arange(n_delays, device=observation_tokens.device).expand(batch_size, -1)  # [B, D]
        if self.config.rtc_prefix_attention == "shared_observation":
            return self.predict_grouped(
                observation_tokens, observation_positions, action_prefix, all_delays, targets, targets_is_pad
            )
        # Batch expansion: virtual sample b*D + d is sample b at delay d.
        observation_tokens = repeat_per_delay(observation_tokens, n_delays, batch_dim=1)  # [S, B*D, dim]
        action_prefix = repeat_per_delay(action_prefix, n_delays)  # [B*D, P, A]
        if targets is not None:
            targets = targets.flatten(0, 1)  # [B*D, chunk, A]
            targets_is_pad = targets_is_pad.flatten(0, 1)  # [B*D, chunk]
        actions, latent_params = self.predict_from_observation(
            observation_tokens,
            observation_positions,
            action_prefix,
            all_delays.flatten(),
            targets,
            targets_is_pad,
        )
        return actions.unflatten(0, (batch_size, n_delays)), latent_params


class ACTRelativeRTCAllDelaysPolicy(ACTRelativeRTCPolicy):
    """ACT relative-RTC trained on all delays per sample (`rtc_train_all_delays=true`, the default)."""

    config_class = ACTRelativeRTCAllDelaysConfig
    name = "act_relative_rtc_alldelays"
    model_class = ACTRelativeRTCAllDelays

    def __init__(self, config: ACTRelativeRTCAllDelaysConfig, dataset_meta=None, **kwargs):
        super().__init__(config, dataset_meta=dataset_meta, **kwargs)
        weights = torch.ones(config.n_delays)
        if config.rtc_delay_loss_weights is not None:
            weights = torch.tensor(config.rtc_delay_loss_weights, dtype=torch.float32)
        # Normalized to mean 1 so that the loss scale (and the learning rate) does not depend on the weights.
        self.register_buffer("delay_loss_weight", weights / weights.mean(), persistent=False)

    def forward(
        self, batch: dict[str, Tensor], reduction: str = "mean", delays: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """All delays per sample when `rtc_train_all_delays` (and no `delays` are given); otherwise exactly
        the base policy's one-delay loss. `reduction="none"` returns [B]: each sample's loss over its
        delays."""
        if not self.config.rtc_train_all_delays or delays is not None:
            return super().forward(batch, reduction=reduction, delays=delays)
        window, window_is_pad = self._training_window(batch)
        chunk_size = self.config.chunk_size
        targets = delay_windows(window, chunk_size)  # [B, D, chunk, A], a view of the window
        targets_is_pad = delay_windows(window_is_pad, chunk_size)  # [B, D, chunk]
        action_prefix = window[:, : self.config.rtc_max_delay]
        predicted, (mu, log_sigma_x2) = self.model(batch, action_prefix, None, targets, targets_is_pad)

        l1_per_delay = masked_l1(predicted, targets, targets_is_pad, self.action_loss_weight)  # [B, D]
        per_sample = (l1_per_delay * self.delay_loss_weight).mean(dim=1)  # [B]
        loss_dict = {"l1_loss": per_sample.mean().item()}
        for delay, l1 in enumerate(l1_per_delay.mean(dim=0).tolist()):
            loss_dict[f"l1_loss_delay_{delay}"] = l1
        if mu is not None:
            kld_per_delay = kl_divergence(mu, log_sigma_x2).unflatten(0, l1_per_delay.shape)  # [B, D]
            loss_dict["kld_loss"] = kld_per_delay.mean().item()
            per_sample = per_sample + self.config.kl_weight * kld_per_delay.mean(dim=1)
        return reduce_loss(per_sample, reduction), loss_dict
