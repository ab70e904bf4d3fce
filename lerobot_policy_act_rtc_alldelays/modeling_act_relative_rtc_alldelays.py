"""All-delays training: every delay `0..rtc_max_delay` of every sample (or `rtc_delays_per_sample` = K of
them, drawn per sample) in one forward pass.

The backbone runs once on the B real samples. The observation tokens it yields are then expanded to
B * K virtual samples with `expand` views, so no image-sized tensor is copied; only the small post-backbone
tokens are materialised when the transformer needs them contiguous.
"""

import torch
from torch import Tensor

from .configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from .delays import delay_windows, draw_delays, repeat_per_delay
from .losses import delay_loss_weights, kl_divergence, masked_l1, reduce_loss
from .modeling_act_relative_rtc import ACTRelativeRTC, ACTRelativeRTCPolicy


class ACTRelativeRTCAllDelays(ACTRelativeRTC):
    def forward(
        self,
        batch: dict[str, Tensor],
        action_prefix: Tensor,
        delays: Tensor,
        targets: Tensor | None = None,
        targets_is_pad: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """With `delays` [B], the base model's forward. With `delays` [B, K], K delays of every sample:

        action_prefix [B, rtc_max_delay, A] (shared by the delays of a sample, masked per delay),
        targets [B, K, chunk, A] and targets_is_pad [B, K, chunk] (VAE only)
        -> actions [B, K, chunk, A] and (mu, log sigma^2) each [B * K, latent] or None.
        """
        if delays.ndim == 1:
            return super().forward(batch, action_prefix, delays, targets, targets_is_pad)
        observation_tokens, observation_positions = self.encode_observation(batch)  # [S, B, dim]
        action_prefix = self.self_conditioned_prefix(observation_tokens, observation_positions, action_prefix)
        if self.config.rtc_prefix_attention == "shared_observation":
            return self.predict_grouped(
                observation_tokens, observation_positions, action_prefix, delays, targets, targets_is_pad
            )
        # Batch expansion: virtual sample b*K + k is sample b at delay delays[b, k].
        batch_size, n_drawn = delays.shape
        observation_tokens = repeat_per_delay(observation_tokens, n_drawn, batch_dim=1)  # [S, B*K, dim]
        action_prefix = repeat_per_delay(action_prefix, n_drawn)  # [B*K, P, A]
        if targets is not None:
            targets = targets.flatten(0, 1)  # [B*K, chunk, A]
            targets_is_pad = targets_is_pad.flatten(0, 1)  # [B*K, chunk]
        actions, latent_params = self.predict_from_observation(
            observation_tokens,
            observation_positions,
            action_prefix,
            delays.flatten(),
            targets,
            targets_is_pad,
        )
        return actions.unflatten(0, (batch_size, n_drawn)), latent_params


class ACTRelativeRTCAllDelaysPolicy(ACTRelativeRTCPolicy):
    """ACT relative-RTC trained on several delays per sample (`rtc_train_all_delays=true`, the default):
    `rtc_delays_per_sample` of them, all by default."""

    config_class = ACTRelativeRTCAllDelaysConfig
    name = "act_relative_rtc_alldelays"
    model_class = ACTRelativeRTCAllDelays

    def __init__(self, config: ACTRelativeRTCAllDelaysConfig, dataset_meta=None, **kwargs):
        super().__init__(config, dataset_meta, **kwargs)
        # [D] loss weight of each delay, on the policy's device; derived from the config, not saved.
        self.register_buffer("delay_loss_weight", self.configured_delay_loss_weights(), persistent=False)

    def configured_delay_loss_weights(self) -> Tensor:
        config = self.config
        return delay_loss_weights(
            config.n_delays, config.rtc_delay0_loss_share, config.rtc_delay_loss_weights
        )

    @classmethod
    def _load_as_safetensor(
        cls, model: "ACTRelativeRTCAllDelaysPolicy", model_file: str, map_location: str, strict: bool
    ) -> "ACTRelativeRTCAllDelaysPolicy":
        """The base's loading, after which the delay weights follow the config as loaded: a checkpoint of an
        earlier release trains on with the share it was saved under."""
        model = super()._load_as_safetensor(model, model_file, map_location, strict)
        model.delay_loss_weight.copy_(model.configured_delay_loss_weights())
        return model

    def forward(
        self, batch: dict[str, Tensor], reduction: str = "mean", delays: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """`rtc_delays_per_sample` delays per sample when `rtc_train_all_delays` (and no `delays` are given),
        drawn per sample (all of them by default); otherwise exactly the base policy's one-delay loss. The
        loss averages the drawn delays, each weighted by `losses.delay_loss_weights` (by default delay 0
        is `rtc_delay0_loss_share` of it); `l1_loss_delay_<d>` logs the mean L1 of the delays drawn in this
        batch. `reduction="none"` returns [B]: each sample's loss
        over its delays."""
        if not self.config.rtc_train_all_delays or delays is not None:
            return super().forward(batch, reduction=reduction, delays=delays)
        window, window_is_pad = self._training_window(batch)
        config = self.config
        # [B, K] delays per sample
        drawn = draw_delays(window.shape[0], config.n_delays, config.delays_per_sample, window.device)
        targets = delay_windows(window, config.chunk_size)  # [B, D, chunk, A], a view of the window
        targets_is_pad = delay_windows(window_is_pad, config.chunk_size)  # [B, D, chunk]
        if drawn.shape[1] < config.n_delays:  # [B, D, ...] -> [B, K, ...]: action-sized copies only
            sample = torch.arange(window.shape[0], device=window.device).unsqueeze(1)
            targets, targets_is_pad = targets[sample, drawn], targets_is_pad[sample, drawn]
        action_prefix = window[:, : config.rtc_max_delay]
        predicted, (mu, log_sigma_x2) = self.model(
            self.model_inputs(batch), action_prefix, drawn, targets, targets_is_pad
        )

        l1_per_delay = masked_l1(predicted, targets, targets_is_pad, self.action_loss_weight)  # [B, K]
        per_sample = (l1_per_delay * self.delay_loss_weight[drawn]).mean(dim=1)  # [B]
        loss_dict = {"l1_loss": per_sample.mean().item()}
        loss_dict.update(per_delay_means(l1_per_delay, drawn, config.n_delays))
        if mu is not None:
            kld_per_delay = kl_divergence(mu, log_sigma_x2).unflatten(0, l1_per_delay.shape)  # [B, K]
            loss_dict["kld_loss"] = kld_per_delay.mean().item()
            per_sample = per_sample + self.config.kl_weight * kld_per_delay.mean(dim=1)
        return reduce_loss(per_sample, reduction), loss_dict


def per_delay_means(l1_per_delay: Tensor, drawn: Tensor, n_delays: int) -> dict[str, float]:
    """`{"l1_loss_delay_<d>": mean L1}` over the (sample, delay) pairs drawn at each delay d, for the delays
    drawn in this batch. l1_per_delay and drawn: [B, K]."""
    flat_delays = drawn.flatten()
    sums = l1_per_delay.new_zeros(n_delays).index_add_(0, flat_delays, l1_per_delay.detach().flatten())
    counts = torch.bincount(flat_delays, minlength=n_delays)
    return {
        f"l1_loss_delay_{delay}": total / count
        for delay, (total, count) in enumerate(zip(sums.tolist(), counts.tolist(), strict=True))
        if count
    }
