"""ACT with relative actions and training-time real-time chunking (the base policy).

The transformer sees, as encoder tokens: the camera feature maps (2D sinusoidal positions), the robot state
(with `use_state_token`, as in ACT), the environment state if present, the VAE latent if the VAE is on, then
`rtc_max_delay` action-prefix tokens. A prefix token at a position `>= delay` is replaced by a learnable pad
embedding, so one network serves every delay. In training, a prefix hidden by `rtc_prefix_dropout` has its
actions replaced by a distinct learned mask embedding: the delay stays visible where the pad tokens start.

Shape letters used in every module of this package:
    B: samples in the batch                 D: delays trained per sample, `rtc_max_delay + 1`
    N: sequences the transformer runs on (B, or B * D with all delays expanded)
    G: delay groups packed into one sequence (shared-observation attention)
    L: delay-dependent encoder tokens per sequence (the VAE latent if on, then the P prefix tokens)
    P: prefix tokens, `rtc_max_delay`       S: encoder tokens (S_obs of them from the observation)
    W: actions in a training window, `rtc_max_delay + chunk_size`
    A: action dimensions                    T: actions in a chunk or a runtime left-over
"""

import logging
from collections import deque
from collections.abc import Callable
from itertools import chain
from pathlib import Path

import einops
import torch
import torchvision
from huggingface_hub import ModelCard
from huggingface_hub.constants import CONFIG_NAME
from lerobot.policies.act.modeling_act import (
    ACTDecoder,
    ACTEncoder,
    ACTSinusoidalPositionEmbedding2d,
    ACTTemporalEnsembler,
    create_sinusoidal_pos_embedding,
)
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from .attention import attention_masks, shared_observation_masks, use_masked_attention
from .blending import blend_join
from .checkpoint_loading import (
    adopt_earlier_release_values,
    refuse_missing_weights,
    refuse_other_attention_mode,
    stored_weight_names,
)
from .configuration_act_relative_rtc import RTC_PREFIX_ATTENTIONS, ACTRelativeRTCConfig
from .dataset_derived import after_state_dict_load, derive_from_dataset, register_dataset_derived_buffers
from .delays import delay_windows, repeat_per_delay
from .inference_inputs import (
    check_action_prefix,
    check_inference_setting,
    check_last_action,
    model_observation,
    observation_batch_size,
)
from .losses import kl_divergence, masked_l1, reduce_loss
from .model_card import add_plugin_section
from .relative_actions import (
    RelativeActionNormalizer,
    StateNormalizer,
    action_window,
    inference_origin,
)
from .rtc_runtime import RTCRuntimeAdapter

# The state token's input projection: a checkpoint without it predates the state token.
STATE_TOKEN_WEIGHT = "model.encoder_robot_state_input_proj.weight"


class ACTRelativeRTC(nn.Module):
    """The network: observation encoder (backbone + projections), optional VAE, transformer, action head."""

    def __init__(self, config: ACTRelativeRTCConfig):
        super().__init__()
        self.config = config
        dim = config.dim_model
        action_dim = config.action_feature.shape[0]

        if config.use_vae:
            # BERT-style VAE encoder over [cls, *target_chunk]; the cls output parametrizes the latent.
            self.vae_encoder = ACTEncoder(config, is_vae_encoder=True)
            self.vae_encoder_cls_embed = nn.Embedding(1, dim)
            self.vae_encoder_action_input_proj = nn.Linear(action_dim, dim)
            self.vae_encoder_latent_output_proj = nn.Linear(dim, config.latent_dim * 2)
            self.register_buffer(
                "vae_encoder_pos_enc",
                create_sinusoidal_pos_embedding(1 + config.chunk_size, dim).unsqueeze(1),  # [1+chunk, 1, dim]
            )
            self.encoder_latent_input_proj = nn.Linear(config.latent_dim, dim)
            self.encoder_latent_pos_embed = nn.Embedding(1, dim)

        if config.image_features:
            backbone_model = getattr(torchvision.models, config.vision_backbone)(
                replace_stride_with_dilation=[False, False, config.replace_final_stride_with_dilation],
                weights=config.pretrained_backbone_weights,
                norm_layer=FrozenBatchNorm2d,
            )
            self.backbone = IntermediateLayerGetter(backbone_model, return_layers={"layer4": "feature_map"})
            self.encoder_img_feat_input_proj = nn.Conv2d(backbone_model.fc.in_features, dim, kernel_size=1)
            self.encoder_cam_feat_pos_embed = ACTSinusoidalPositionEmbedding2d(dim // 2)
        if config.has_state_token:
            self.encoder_robot_state_input_proj = nn.Linear(config.robot_state_feature.shape[0], dim)
            self.encoder_robot_state_pos_embed = nn.Embedding(1, dim)
        if config.env_state_feature:
            self.encoder_env_state_input_proj = nn.Linear(config.env_state_feature.shape[0], dim)
            self.encoder_env_state_pos_embed = nn.Embedding(1, dim)

        if config.rtc_max_delay > 0:
            self.prefix_input_proj = nn.Linear(action_dim, dim)
            self.prefix_pad_embed = nn.Embedding(1, dim)
            self.prefix_pos_embed = nn.Embedding(config.rtc_max_delay, dim)
            if config.rtc_prefix_dropout > 0:
                self.prefix_mask_embed = nn.Embedding(1, dim)

        self.encoder = ACTEncoder(config)
        self.decoder = ACTDecoder(config)
        use_masked_attention(self)
        self.decoder_pos_embed = nn.Embedding(config.chunk_size, dim)
        self.action_head = nn.Linear(dim, action_dim)

        for p in chain(self.encoder.parameters(), self.decoder.parameters()):
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode_observation(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Runs the backbone once per camera. Returns tokens [S_obs, B, dim] and positions [S_obs, 1, dim].

        `batch[OBS_STATE]` is read by the state token only, and must be normalized (see the policy)."""
        tokens, positions = [], []
        for key in self.config.image_features:
            feature_map = self.backbone(batch[key])["feature_map"]  # [B, C, h, w]
            position = self.encoder_cam_feat_pos_embed(feature_map).to(dtype=feature_map.dtype)
            feature_map = self.encoder_img_feat_input_proj(feature_map)
            tokens.append(einops.rearrange(feature_map, "b c h w -> (h w) b c"))
            positions.append(einops.rearrange(position, "1 c h w -> (h w) 1 c"))
        if self.config.has_state_token:
            tokens.append(self.encoder_robot_state_input_proj(batch[OBS_STATE]).unsqueeze(0))
            positions.append(self.encoder_robot_state_pos_embed.weight.unsqueeze(1))
        if self.config.env_state_feature:
            tokens.append(self.encoder_env_state_input_proj(batch[OBS_ENV_STATE]).unsqueeze(0))
            positions.append(self.encoder_env_state_pos_embed.weight.unsqueeze(1))
        return torch.cat(tokens), torch.cat(positions)

    def encode_latent(
        self, targets: Tensor | None, targets_is_pad: Tensor | None, n_sequences: int
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """VAE latent token [1, N, dim] and its distribution (mu, log sigma^2), each [N, latent] or None.

        With targets (training) the latent is sampled from the VAE encoder; without (inference, or
        validation in eval mode) it is zero, as in ACT.
        """
        if targets is None or not self.training:
            latent = torch.zeros(
                n_sequences,
                self.config.latent_dim,
                dtype=self.encoder_latent_input_proj.weight.dtype,
                device=self.encoder_latent_input_proj.weight.device,
            )
            return self.encoder_latent_input_proj(latent).unsqueeze(0), None, None
        cls_embed = self.vae_encoder_cls_embed.weight.expand(n_sequences, 1, -1)  # [N, 1, dim]
        vae_input = torch.cat([cls_embed, self.vae_encoder_action_input_proj(targets)], dim=1)
        cls_is_pad = torch.zeros(n_sequences, 1, dtype=torch.bool, device=targets.device)
        key_padding_mask = torch.cat([cls_is_pad, targets_is_pad], dim=1)  # [N, 1 + chunk]
        cls_out = self.vae_encoder(
            vae_input.transpose(0, 1), pos_embed=self.vae_encoder_pos_enc, key_padding_mask=key_padding_mask
        )[0]
        mu, log_sigma_x2 = self.vae_encoder_latent_output_proj(cls_out).chunk(2, dim=-1)
        latent = mu + log_sigma_x2.div(2).exp() * torch.randn_like(mu)
        return self.encoder_latent_input_proj(latent).unsqueeze(0), mu, log_sigma_x2

    def encode_prefix(self, action_prefix: Tensor, delays: Tensor) -> Tensor:
        """[N, rtc_max_delay, A] prefix and [N] delays -> [rtc_max_delay, N, dim] tokens.

        In training, `rtc_prefix_noise_std` perturbs each sequence's prefix and `rtc_prefix_dropout` hides it
        behind the mask embedding; the pad tokens past the delay stay, so the delay remains visible."""
        config = self.config
        if self.training and config.rtc_prefix_noise_std > 0:
            action_prefix = action_prefix + config.rtc_prefix_noise_std * torch.randn_like(action_prefix)
        embedding = self.prefix_input_proj(action_prefix)  # [N, P, dim]
        if self.training and config.rtc_prefix_dropout > 0:
            hidden = torch.rand(delays.shape[0], 1, 1, device=delays.device) < config.rtc_prefix_dropout
            embedding = torch.where(hidden, self.prefix_mask_embed.weight, embedding)
        is_pad = torch.arange(config.rtc_max_delay, device=delays.device) >= delays.unsqueeze(1)  # [N, P]
        embedding = torch.where(is_pad.unsqueeze(-1), self.prefix_pad_embed.weight, embedding)
        return embedding.transpose(0, 1)

    def encode_delay_tokens(
        self,
        action_prefix: Tensor,
        delays: Tensor,
        targets: Tensor | None,
        targets_is_pad: Tensor | None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor | None, Tensor | None]]:
        """The encoder tokens that depend on the delay: the VAE latent (it encodes that delay's targets) and
        the prefix. [N, ...] inputs -> tokens [L, N, dim], positions [L, 1, dim] and (mu, log sigma^2)."""
        tokens, positions = [], []
        mu = log_sigma_x2 = None
        if self.config.use_vae:
            latent_token, mu, log_sigma_x2 = self.encode_latent(targets, targets_is_pad, delays.shape[0])
            tokens.append(latent_token)
            positions.append(self.encoder_latent_pos_embed.weight.unsqueeze(1))
        if self.config.rtc_max_delay > 0:
            tokens.append(self.encode_prefix(action_prefix, delays))
            positions.append(self.prefix_pos_embed.weight.unsqueeze(1))
        dim = self.config.dim_model
        if not tokens:  # no VAE and no prefix
            return (
                action_prefix.new_zeros(0, delays.shape[0], dim),
                action_prefix.new_zeros(0, 1, dim),
                (None, None),
            )
        return torch.cat(tokens), torch.cat(positions), (mu, log_sigma_x2)

    def decode(self, encoder_out: Tensor, encoder_positions: Tensor, n_groups: int = 1) -> Tensor:
        """Decoder and action head: `n_groups` groups of `chunk_size` queries -> [N, n_groups * chunk, A]."""
        # The queries start from their learned positions rather than ACT's zeros: with a zero input the first
        # decoder layer's self-attention never receives a gradient (dead weights, and a DDP hazard).
        query_positions = self.decoder_pos_embed.weight.repeat(n_groups, 1).unsqueeze(1)  # [G*chunk, 1, dim]
        decoder_in = query_positions.expand(-1, encoder_out.shape[1], -1)  # [G*chunk, N, dim], a view
        decoder_out = self.decoder(
            decoder_in, encoder_out, encoder_pos_embed=encoder_positions, decoder_pos_embed=query_positions
        )
        return self.action_head(decoder_out.transpose(0, 1))

    def predict_from_observation(
        self,
        observation_tokens: Tensor,
        observation_positions: Tensor,
        action_prefix: Tensor,
        delays: Tensor,
        targets: Tensor | None = None,
        targets_is_pad: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """Full attention on N sequences whose observation tokens are already encoded.

        observation_tokens: [S_obs, N, dim]; action_prefix: [N, rtc_max_delay, A]; delays: [N];
        targets: [N, chunk, A] (VAE only). Returns actions [N, chunk, A] and (mu, log sigma^2).
        """
        delay_tokens, delay_positions, latent_params = self.encode_delay_tokens(
            action_prefix, delays, targets, targets_is_pad
        )
        positions = torch.cat(
            [observation_positions, delay_positions]
        )  # [S, 1, dim]: shared by every sequence
        encoder_out = self.encoder(torch.cat([observation_tokens, delay_tokens]), pos_embed=positions)
        return self.decode(encoder_out, positions), latent_params

    def predict_grouped(
        self,
        observation_tokens: Tensor,
        observation_positions: Tensor,
        action_prefix: Tensor,
        delays: Tensor,
        targets: Tensor | None = None,
        targets_is_pad: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """Shared-observation attention: per sample ONE sequence, the observation tokens once, then G delay
        groups, under block masks (see `shared_observation_masks`).

        observation_tokens: [S_obs, B, dim]; action_prefix: [B, rtc_max_delay, A]; delays: [B, G];
        targets: [B, G, chunk, A] (VAE only). Returns actions [B, G, chunk, A] and (mu, log sigma^2), each
        [B * G, latent] or None.
        """
        n_observation, batch_size, _ = observation_tokens.shape
        n_groups = delays.shape[1]
        action_prefix = repeat_per_delay(action_prefix, n_groups)  # [B, P, A] -> [B*G, P, A]
        if targets is not None:
            targets, targets_is_pad = targets.flatten(0, 1), targets_is_pad.flatten(0, 1)
        delay_tokens, delay_positions, latent_params = self.encode_delay_tokens(
            action_prefix, delays.flatten(), targets, targets_is_pad
        )
        group_length = delay_tokens.shape[0]
        # [L, B*G, dim] -> [L, B, G, dim] -> [G, L, B, dim] -> [G*L, B, dim]: group g at g*L .. (g+1)*L - 1.
        delay_tokens = delay_tokens.unflatten(1, (batch_size, n_groups)).permute(2, 0, 1, 3).flatten(0, 1)
        positions = torch.cat([observation_positions, delay_positions.repeat(n_groups, 1, 1)])
        masks = shared_observation_masks(
            n_observation, group_length, n_groups, self.config.chunk_size, observation_tokens.device
        )
        with attention_masks(self.encoder, self.decoder, *masks):
            encoder_out = self.encoder(torch.cat([observation_tokens, delay_tokens]), pos_embed=positions)
            actions = self.decode(encoder_out, positions, n_groups)  # [B, G*chunk, A]
        return actions.unflatten(1, (n_groups, self.config.chunk_size)), latent_params

    def self_conditioned_prefix(
        self, observation_tokens: Tensor, observation_positions: Tensor, action_prefix: Tensor
    ) -> Tensor:
        """In training, each sample's prefix [B, P, A] replaced with probability `rtc_prefix_self_condition`
        by the network's own prediction of those actions: the first P rows of its delay-0 chunk from the
        same observation tokens [S_obs, B, dim], without gradient."""
        probability = self.config.rtc_prefix_self_condition
        if not self.training or probability == 0 or self.config.rtc_max_delay == 0:
            return action_prefix
        batch_size, n_prefix = action_prefix.shape[:2]
        delay_zero = torch.zeros(batch_size, 1, dtype=torch.long, device=action_prefix.device)
        with torch.no_grad():
            if self.config.rtc_prefix_attention == "shared_observation":
                own = self.predict_grouped(
                    observation_tokens, observation_positions, action_prefix, delay_zero
                )[0][:, 0]
            else:
                own = self.predict_from_observation(
                    observation_tokens, observation_positions, action_prefix, delay_zero.squeeze(1)
                )[0]
        chosen = torch.rand(batch_size, 1, 1, device=action_prefix.device) < probability
        return torch.where(chosen, own[:, :n_prefix].to(action_prefix), action_prefix)

    def forward(
        self,
        batch: dict[str, Tensor],
        action_prefix: Tensor,
        delays: Tensor,
        targets: Tensor | None = None,
        targets_is_pad: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """One delay per sample: delays [B], action_prefix [B, rtc_max_delay, A] -> actions [B, chunk, A]."""
        observation_tokens, observation_positions = self.encode_observation(batch)
        action_prefix = self.self_conditioned_prefix(observation_tokens, observation_positions, action_prefix)
        if self.config.rtc_prefix_attention == "shared_observation":
            if targets is not None:
                targets, targets_is_pad = targets.unsqueeze(1), targets_is_pad.unsqueeze(1)
            actions, latent_params = self.predict_grouped(
                observation_tokens,
                observation_positions,
                action_prefix,
                delays.unsqueeze(1),
                targets,
                targets_is_pad,
            )
            return actions.squeeze(1), latent_params
        return self.predict_from_observation(
            observation_tokens, observation_positions, action_prefix, delays, targets, targets_is_pad
        )


class ACTRelativeRTCPolicy(PreTrainedPolicy):
    """ACT relative-RTC: one random delay per training sample; prefix-conditioned chunks at inference."""

    config_class = ACTRelativeRTCConfig
    name = "act_relative_rtc"
    model_class = ACTRelativeRTC

    def __init__(self, config: ACTRelativeRTCConfig, dataset_meta=None, **kwargs):
        """`dataset_meta` (a LeRobotDatasetMetadata) is given by `make_policy` when training: its numeric
        columns are checked for NaN and inf, and it provides the relative-action statistics and the action
        names for `action_loss_weights`.

        When `make_policy` then loads a checkpoint (`--policy.path` or `--resume`), the statistics and loss
        weights stored in it are kept if they were derived from the same data (same `stats_fingerprint`:
        resuming, or continuing on the same dataset) and re-derived from `dataset_meta` otherwise
        (fine-tuning on another dataset). See `dataset_derived`.
        """
        super().__init__(config)
        config.validate_features()
        self.config = config
        self.model = self.model_class(config)
        action_dim = config.action_feature.shape[0]
        if config.predict_relative_actions:
            self.relative_action_normalizer = RelativeActionNormalizer(action_dim)
            if config.has_state_token:
                self.state_normalizer = StateNormalizer(config.robot_state_feature.shape[0])
        register_dataset_derived_buffers(self, action_dim)
        # The attention mode the weights were trained with: the other mode would change every prediction.
        self.register_buffer(
            "trained_prefix_attention", torch.tensor(RTC_PREFIX_ATTENTIONS.index(config.rtc_prefix_attention))
        )
        if dataset_meta is not None:
            derive_from_dataset(self, dataset_meta)
        self.register_load_state_dict_post_hook(refuse_other_attention_mode)
        self.register_load_state_dict_post_hook(after_state_dict_load)
        self.rtc_runtime = RTCRuntimeAdapter(config)
        if config.temporal_ensemble_coeff is not None:
            self.temporal_ensembler = ACTTemporalEnsembler(config.temporal_ensemble_coeff, config.chunk_size)
        self.reset()

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """LeRobot's card (its signature differs between releases) with how to install this plugin."""
        card = super().generate_model_card(*args, **kwargs)
        return add_plugin_section(card, self.config.type, self.config.repo_id)

    def get_optim_params(self) -> list[dict]:
        backbone, rest = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (backbone if name.startswith("model.backbone") else rest).append(param)
        return [{"params": rest}, {"params": backbone, "lr": self.config.optimizer_lr_backbone}]

    def reset(self) -> None:
        """Call whenever the environment is reset."""
        if self.config.temporal_ensemble_coeff is not None:
            self.temporal_ensembler.reset()
        self._action_queue: deque[Tensor] = deque()
        self._n_selected_actions = 0  # select_action calls since reset: the steps of `on_chunk_start`
        # The action returned last [B, A]: the origin of the next chunk with `relative_anchor=last_action`.
        self._last_action: Tensor | None = None
        # The last chunk's predictions past its queued actions [B, T, A], for the steps that follow them:
        # what the next chunk is blended with (`rtc_blend_steps`). None: the episode's first chunk is next.
        self._unqueued_tail: Tensor | None = None
        self.rtc_runtime.reset()

    # ---- action spaces -------------------------------------------------------------------------------
    def to_model_space(self, actions: Tensor, origin: Tensor | None) -> Tensor:
        """Absolute actions [B, T, A], as the preprocessor outputs them -> the model's prediction space.
        `origin` [B, A]: what relative actions are measured from (`relative_anchor`); unused without them."""
        if not self.config.predict_relative_actions:
            return actions
        self.relative_action_normalizer.check_stats()
        return self.relative_action_normalizer.normalize(actions, origin)

    def to_action_space(self, model_actions: Tensor, origin: Tensor | None) -> Tensor:
        """Inverse of `to_model_space`: model outputs [B, T, A] -> absolute actions for the postprocessor."""
        if not self.config.predict_relative_actions:
            return model_actions
        return self.relative_action_normalizer.unnormalize(model_actions, origin)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Loads a checkpoint, also one saved before the state token existed: such weights were trained
        without it, so the token is removed and they predict exactly as before."""
        if (
            self.config.has_state_token
            and STATE_TOKEN_WEIGHT not in state_dict
            and any(key.startswith("model.") for key in state_dict)
        ):
            logging.info("The checkpoint predates the state token: loading it with use_state_token=false.")
            self.config.use_state_token = False
            del self.model.encoder_robot_state_input_proj, self.model.encoder_robot_state_pos_embed
            if hasattr(self, "state_normalizer"):
                del self.state_normalizer
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def _load_as_safetensor(
        cls, model: "ACTRelativeRTCPolicy", model_file: str, map_location: str, strict: bool
    ) -> "ACTRelativeRTCPolicy":
        """LeRobot's loading of the weights file in `from_pretrained` (0.4.4 and 0.6.1 alike), refusing a
        truncated or corrupt file and a checkpoint that lacks weights of this policy. A checkpoint saved
        before a field whose default changes behaviour existed runs as it was saved (`config.json` beside
        the weights tells)."""
        stored = stored_weight_names(model_file)
        adopt_earlier_release_values(model.config, Path(model_file).with_name(CONFIG_NAME))
        model = super()._load_as_safetensor(model, model_file, map_location, strict)
        refuse_missing_weights(model, stored, model_file)
        return model

    def model_inputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch as the network reads it: with relative actions the state arrives raw (it is their
        origin), so the state token's copy is normalized here."""
        if not hasattr(self, "state_normalizer"):
            return batch
        self.state_normalizer.check_stats()
        return {**batch, OBS_STATE: self.state_normalizer.normalize(batch[OBS_STATE])}

    def _training_window(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The action window in model space [B, W, A] and its padding mask [B, W]."""
        window, window_is_pad, origin = action_window(self.config, batch)
        return self.to_model_space(window, origin), window_is_pad

    # ---- training ------------------------------------------------------------------------------------
    def forward(
        self, batch: dict[str, Tensor], reduction: str = "mean", delays: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Training loss with one delay per sample, drawn uniformly from 0..rtc_max_delay unless `delays`
        ([B] ints) fixes them. `reduction="none"` returns the per-sample loss [B].

        The batch, as the preprocessor delivers it:
            `observation.images.<camera>` [B, 3, H, W] for every camera of the config;
            `observation.environment_state` [B, E] if the config has one;
            `observation.state` [B, A], raw (the origin of the relative actions), when they are on;
            `action` [B, W, A] ([B, W + 1, A], the anchor first, with `relative_anchor=last_action`), raw
                with relative actions on and normalized otherwise, the window of `action_delta_indices`
                (see the config);
            `action_is_pad` [B, W], optional: True where LeRobot padded the window past the episode.
        """
        window, window_is_pad = self._training_window(batch)
        batch_size = window.shape[0]
        if delays is None:
            delays = torch.randint(0, self.config.n_delays, (batch_size,), device=window.device)
        sample = torch.arange(batch_size, device=window.device)
        targets = delay_windows(window, self.config.chunk_size)[sample, delays]  # [B, chunk, A]
        targets_is_pad = delay_windows(window_is_pad, self.config.chunk_size)[sample, delays]  # [B, chunk]
        action_prefix = window[:, : self.config.rtc_max_delay]
        predicted, (mu, log_sigma_x2) = self.model(
            self.model_inputs(batch), action_prefix, delays, targets, targets_is_pad
        )

        l1_per_sample = masked_l1(predicted, targets, targets_is_pad, self.action_loss_weight)
        loss_dict = {"l1_loss": l1_per_sample.mean().item()}
        per_sample = l1_per_sample
        if mu is not None:
            kld_per_sample = kl_divergence(mu, log_sigma_x2)
            loss_dict["kld_loss"] = kld_per_sample.mean().item()
            per_sample = per_sample + self.config.kl_weight * kld_per_sample
        return reduce_loss(per_sample, reduction), loss_dict

    # ---- inference -----------------------------------------------------------------------------------
    # Called by `select_action` with the step (0-based count of `select_action` calls since `reset`) at
    # which each new chunk's first action executes. Set it per instance: `policy.on_chunk_start = f`.
    on_chunk_start: Callable[[int], None] | None = None

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Tensor],
        delay: int = 0,
        action_prefix: Tensor | None = None,
        last_action: Tensor | None = None,
        *,
        inference_delay: int | None = None,
        prev_chunk_left_over: Tensor | None = None,
    ) -> Tensor:
        """Predicts the `chunk_size` actions that follow an action prefix: [B, chunk_size, A].

        The returned chunk and `action_prefix` live in the same space, the one the postprocessor expects:
        - with `predict_relative_actions=true` (the default): absolute actions, as the robot executes them.
          The model converts to and from `action - observation.state[t]` itself and the postprocessor
          leaves actions as they are.
        - with `predict_relative_actions=false`: actions normalized as the preprocessor normalizes them (the
          dataset's mean and std by default); the postprocessor turns them into robot actions.
        So a prefix cut from a chunk this method returned is always in the right space.

        Args:
            batch: the preprocessed observation: every camera of the config [B, 3, H, W],
                `observation.environment_state` [B, E] if configured, and `observation.state` [B, S] with
                relative actions (the origin of the prediction). The inputs must be finite and on the
                policy's device; floating ones of any dtype are cast to the policy's (see
                `inference_inputs.model_observation`).
            delay: number of actions that execute while this inference runs (0..rtc_max_delay).
            action_prefix: those actions, [B, delay, A], in the space above. Required iff delay > 0.
            last_action: with `relative_anchor=last_action`, the action commanded just before the
                observation [B, A], in the space above (`select_action` passes the last one it returned);
                None before an episode's first chunk, which is then measured from the state. Other
                anchors do not read it.
            inference_delay, prev_chunk_left_over: the call of LeRobot 0.6's real-time chunking runtime
                (`lerobot-rollout --inference.type=rtc`); see `rtc_runtime.RTCRuntimeAdapter.predict`.
        """
        if inference_delay is not None or prev_chunk_left_over is not None:
            return self.rtc_runtime.predict(self, batch, inference_delay or 0, prev_chunk_left_over)
        self.eval()
        batch_size = observation_batch_size(self.config, batch)
        batch = model_observation(self.config, batch, self.model.action_head.weight)
        check_last_action(self.config, last_action, batch_size)
        weight = self.model.action_head.weight
        last_action = None if last_action is None else last_action.to(weight)
        origin = inference_origin(self.config, batch.get(OBS_STATE), last_action)
        model_prefix = self._inference_prefix(delay, action_prefix, origin, batch_size)
        delays = torch.full((batch_size,), delay, dtype=torch.long, device=model_prefix.device)
        predicted = self.model(self.model_inputs(batch), model_prefix, delays)[0]
        return self.to_action_space(predicted, origin)

    def supports_rtc(self) -> bool:
        """LeRobot 0.6's real-time runtime (`lerobot-rollout --inference.type=rtc`) may drive this policy: it
        calls `predict_action_chunk(batch, inference_delay=, prev_chunk_left_over=)` from its own thread."""
        return True

    def _inference_prefix(
        self, delay: int, action_prefix: Tensor | None, origin: Tensor | None, batch_size: int
    ) -> Tensor:
        """Checks the prefix and returns it in model space, zero-padded to [B, rtc_max_delay, A]."""
        check_action_prefix(self.config, delay, action_prefix, batch_size)
        weight = self.model.action_head.weight
        padded = weight.new_zeros(batch_size, self.config.rtc_max_delay, weight.shape[0])
        if delay > 0:
            padded[:, :delay] = self.to_model_space(action_prefix.to(padded), origin)
        elif self.config.predict_relative_actions:
            self.relative_action_normalizer.check_stats()
        return padded

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor]) -> Tensor:
        """One action per call, emulating an inference delay of `rtc_inference_delay` control steps.

        Each chunk contributes `n_action_steps` actions. A new chunk is requested, from the current
        observation, when exactly `delay` of them remain: those keep executing (in "prefix" mode they are
        the new chunk's prefix; in "discard" mode the new chunk's first `delay` actions are dropped
        instead). The first chunk of an episode has no predecessor and uses delay 0. With
        `blend_steps` = k > 0 (`rtc_blend_steps`, by default half of the overlap of consecutive chunks), the
        first k actions of every later chunk are blended with the previous
        chunk's predictions for the same steps (see `blending.blend_join`); the actions still queued are
        never changed. `on_chunk_start`, if set, receives the step at which each new chunk's first action
        executes. Before each request the mode and delay are checked against the config's rules
        (ValueError), also when set after construction.
        """
        self.eval()
        delay = self.config.rtc_inference_delay
        ensembling = self.config.temporal_ensemble_coeff is not None
        if ensembling or len(self._action_queue) in (0, delay):
            # A chunk is about to be requested: refuse a mode or delay set after construction that the
            # config rejects, rather than run another setting.
            check_inference_setting(self.config)
        step = self._n_selected_actions
        self._n_selected_actions += 1
        # Only an anchored policy reads the last action (wrappers of predict_action_chunk need not take it).
        anchor = {"last_action": self._last_action} if self.config.anchors_on_last_action else {}
        if ensembling:
            self._notify_chunk_start(step)
            self._last_action = self.temporal_ensembler.update(self.predict_action_chunk(batch, **anchor))
            return self._last_action
        n_steps = self.config.n_action_steps
        predicted, first = None, 0  # the chunk [B, chunk_size, A] and the row of its first queued action
        if not self._action_queue:
            predicted = self.predict_action_chunk(batch, **anchor)
        elif len(self._action_queue) == delay:
            committed = torch.stack(list(self._action_queue), dim=1)  # [B, delay, A]
            if self.config.rtc_inference_mode == "prefix":
                predicted = self.predict_action_chunk(batch, delay=delay, action_prefix=committed, **anchor)
            else:
                predicted, first = self.predict_action_chunk(batch, **anchor), delay
        if predicted is not None:
            chunk = predicted[:, first : first + n_steps]
            # The actions still queued execute first; the new chunk's actions follow them, at the steps the
            # previous chunk's unqueued tail was predicted for. Queued actions are never blended.
            if self._unqueued_tail is not None and self.config.blend_steps > 0:
                chunk = blend_join(chunk, self._unqueued_tail, 0, self.config.blend_steps)
            self._unqueued_tail = predicted[:, first + n_steps :]
            self._notify_chunk_start(step + len(self._action_queue))
            self._action_queue.extend(chunk.transpose(0, 1))
        self._last_action = self._action_queue.popleft()
        return self._last_action

    def _notify_chunk_start(self, step: int) -> None:
        if self.on_chunk_start is not None:
            self.on_chunk_start(step)
