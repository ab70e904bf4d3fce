"""Configuration of ACT with relative actions and training-time real-time chunking (RTC).

This is the base configuration. It is deliberately not registered as a policy type: users train the
registered `act_relative_rtc_alldelays` type, whose configuration subclasses this one.
"""

import logging
from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.utils.constants import OBS_STATE

from .blending import chunk_overlap, default_blend_steps
from .config_checks import RTC_INFERENCE_MODES, RTC_PREFIX_ATTENTIONS, validate_config

__all__ = ["ACTRelativeRTCConfig", "RTC_INFERENCE_MODES", "RTC_PREFIX_ATTENTIONS"]


@dataclass
class ACTRelativeRTCConfig(PreTrainedConfig):
    """ACT that predicts actions relative to `observation.state[t]`, conditioned on an action prefix.

    Training-time RTC: at inference, the first `d` actions of the next chunk are already committed (they
    execute while the model runs). The model therefore sees those `d` actions as a prefix and predicts the
    `chunk_size` actions that follow them. During training `d` is drawn from `{0..rtc_max_delay}`.

    Each sample's action window has `rtc_max_delay + chunk_size` actions starting at `first_action_index`.
    For delay `d`, the prefix is `window[0:d]` and the targets are `window[d : d + chunk_size]`.

    Args (only those that differ from LeRobot's `ACTConfig`, in meaning or default):
        n_action_steps: Actions executed per chunk, as in ACT; 50 by default (ACT: 100, the whole chunk), so
            that each chunk overlaps the next by 50 steps and the default `rtc_blend_steps` joins them
            smoothly.
        rtc_max_delay: Largest inference delay, in control steps, that training simulates.
        first_action_index: Index, relative to the observation's frame, of the window's first action. 0 is
            LeRobot's standard pairing of `action[t]` with the observation at `t`; 1 skips `action[t]` for
            recordings where `action[t]` equals the current state (hand-guided or leader-less data).
        predict_relative_actions: Predict `action - observation.state[t]`, normalized by statistics computed
            from the training windows. Requires the action and the state to have the same dimension. (Not
            named `use_relative_actions`: LeRobot 0.6's `lerobot-train` reads that name from any policy config
            to switch on its own relative-action processor steps.)
        relative_anchor: What relative actions are measured from. "state" (the default):
            `observation.state[t]`. "last_action": the action commanded just before the observation, as
            ACTSmooth does; in training the dataset's action at `first_action_index - 1` (the state at an
            episode's first frame, which has none), at inference the last action `select_action` returned
            (LeRobot 0.6's runtime: the action before its left-over), the state before an episode's first
            chunk. The idea: a robot's commands lead its measured state, and from the last command a prefix of
            commands reads the same in closed loop as in the demonstrations whatever the tracking lag.
            Measured (results/position_study_prefix_probes) it fails in closed loop, errors adding up from
            chunk to chunk: keep "state" unless reproducing that probe.
        action_loss_weights: Optional L1 weight per action dimension, keyed by the dataset's action feature
            names (for instance `{"gripper.pos": 2.0}`); finite and non-negative. Unnamed dimensions keep
            weight 1.
        downscale_img_square: If set, every camera image is padded to a square and resized to this side in
            the preprocessor, so training and evaluation see identical pixels.
        rtc_inference_delay: Inference delay emulated by `select_action` (0..rtc_max_delay).
        rtc_inference_mode: "prefix" conditions the next chunk on the actions still to execute (RTC);
            "discard" ignores them and drops the first `delay` predicted actions instead (plain chunking).
        rtc_blend_steps: Inference only. k > 0 blends each new chunk into the previous one over its first k
            actions: where the previous chunk still predicts the step of the new chunk's i-th action
            (i < k), the action executed is `w_i * previous + (1 - w_i) * new` with
            `w_i = (k - i) / (k + 1)`, so the new chunk fully takes over at its k-th action. The actions
            that execute while inference runs are never changed, and an episode's first chunk has nothing
            to blend with. None (the default) blends over half of the steps consecutive chunks overlap:
            in `select_action`, half of min(`chunk_size - n_action_steps`, `n_action_steps`) (4 for chunk
            18 executing 9; 25 for the default 100 executing 50); in LeRobot 0.6's runtime, half of the
            previous chunk's rows left past the join; 0 where chunks do not overlap
            (`n_action_steps == chunk_size`) or under temporal ensembling. 0 is off. An explicit k is at
            most `n_action_steps` (blending ends before the next chunk arrives) and at most the actions a
            chunk predicts past the ones it executes, `chunk_size - n_action_steps`. Where the previous
            chunk predicts fewer steps past the join (in discard mode it drops the first
            `rtc_inference_delay`), the blend runs over those, with the weights of that shorter k.
            Checkpoints saved before this field existed load with 0, as they ran.
        use_state_token: Give `observation.state`, if the inputs have one, its own encoder token, as ACT
            does (normalized inside the model with the dataset's statistics when relative actions are on,
            by the preprocessor otherwise). Without it the state is only the relative actions' origin.
        rtc_prefix_dropout: Probability, in training, that a (sample, delay) pair has its prefix actions
            replaced by a learned mask token while its targets stay those of its delay. The mask token is
            distinct from the pad token, so the delay stays visible. Teaches the network to read the
            observation rather than only continue the prefix; costs nothing at inference.
        rtc_prefix_noise_std: Standard deviation of Gaussian noise added to the prefix in training, in the
            model's action space (normalized actions). Costs nothing at inference.
        rtc_prefix_self_condition: Probability, in training, that a sample's prefix is the network's own
            prediction of those actions (its delay-0 chunk from the same observation, without gradient)
            instead of the dataset's: in closed loop the prefix is the policy's own earlier chunk, errors
            included, and this shows it such prefixes with the dataset's targets after them. Costs one
            more decoder pass per training step (the backbone output is reused); nothing at inference.
            Measured at 0.5 on the collapse cell of results/prefix_collapse_assembly it moved the prefix
            collapse to another training seed rather than removing it.
        rtc_prefix_attention: "full" lets every encoder token attend to every other (observation tokens
            then depend on the delay). "shared_observation" keeps observation tokens blind to the prefix,
            so all delays of a sample can share them in one packed sequence under block masks; training and
            inference use the same masks. The checkpoint records the mode it was trained with, and loading
            it with the other mode is refused: the weights are not meaningful across modes.
    """

    n_obs_steps: int = 1
    chunk_size: int = 100
    # Half of ACT's 100: a chunk then predicts 50 steps past the ones it executes, which the next chunk
    # blends over (`rtc_blend_steps`); with ACT's 100 consecutive chunks never overlap.
    n_action_steps: int = 50

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {"VISUAL": NormalizationMode.MEAN_STD}
    )

    # Architecture, as in LeRobot's ACT.
    vision_backbone: str = "resnet18"
    pretrained_backbone_weights: str | None = "ResNet18_Weights.IMAGENET1K_V1"
    replace_final_stride_with_dilation: bool = False
    pre_norm: bool = False
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    feedforward_activation: str = "relu"
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1
    use_vae: bool = True
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    temporal_ensemble_coeff: float | None = None
    dropout: float = 0.1
    kl_weight: float = 10.0

    # Relative actions and real-time chunking.
    rtc_max_delay: int = 3
    first_action_index: int = 0
    predict_relative_actions: bool = True
    relative_anchor: str = "state"
    action_loss_weights: dict[str, float] | None = None
    downscale_img_square: int | None = None
    rtc_inference_delay: int = 0
    rtc_inference_mode: str = "discard"
    rtc_blend_steps: int | None = None
    rtc_prefix_attention: str = "full"
    use_state_token: bool = True
    rtc_prefix_dropout: float = 0.5
    rtc_prefix_noise_std: float = 0.0
    rtc_prefix_self_condition: float = 0.0

    # Training preset.
    optimizer_lr: float = 1e-5
    optimizer_weight_decay: float = 1e-4
    optimizer_lr_backbone: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        # Relative actions are normalized inside the model, from raw actions and raw states: the processors
        # must leave both untouched. Without relative actions, both are normalized as in ACT.
        default_norm = (
            NormalizationMode.IDENTITY if self.predict_relative_actions else NormalizationMode.MEAN_STD
        )
        self.normalization_mapping.setdefault("STATE", default_norm)
        self.normalization_mapping.setdefault("ACTION", default_norm)
        try:
            self._validate_fields()
        except ValueError as error:
            # draccus 0.11 (LeRobot 0.6's command line) replaces an error raised while building the config
            # by "Couldn't instantiate class ...", dropping its message: log it so that the user sees it.
            logging.getLogger(__name__).error("Invalid %s: %s", type(self).__name__, error)
            raise

    def _validate_fields(self) -> None:
        validate_config(self)

    def inference_setting_error(self, mode: str, delay: int) -> str | None:
        """Why `select_action` cannot run with `rtc_inference_mode=mode` and `rtc_inference_delay=delay`
        under this config's other fields, or None if it can. Leaves the config unchanged."""
        previous = (self.rtc_inference_mode, self.rtc_inference_delay)
        self.rtc_inference_mode, self.rtc_inference_delay = mode, delay
        try:
            self._validate_fields()
        except ValueError as error:
            return str(error)
        finally:
            self.rtc_inference_mode, self.rtc_inference_delay = previous
        return None

    def set_inference_setting(self, mode: str, delay: int) -> None:
        """Sets `rtc_inference_mode` and `rtc_inference_delay` together, checked by this config's rules:
        ValueError, leaving both unchanged, for a pair they reject. (Fields set one at a time are checked
        only when `select_action` requests its next chunk.)"""
        error = self.inference_setting_error(mode, delay)
        if error is not None:
            raise ValueError(
                f"Cannot set rtc_inference_mode='{mode}' and rtc_inference_delay={delay!r}: {error}"
            )
        self.rtc_inference_mode, self.rtc_inference_delay = mode, delay

    @property
    def blend_steps(self) -> int:
        """k of `select_action`'s blending at the join: `rtc_blend_steps`, None resolved to half of the
        steps consecutive chunks overlap (0 where none do, or under temporal ensembling)."""
        if self.rtc_blend_steps is not None:
            return self.rtc_blend_steps
        if self.temporal_ensemble_coeff is not None:
            return 0
        return default_blend_steps(chunk_overlap(self.chunk_size, self.n_action_steps))

    @property
    def has_state_token(self) -> bool:
        """Whether the encoder reads `observation.state` as a token: asked for, and the inputs have one."""
        return self.use_state_token and self.robot_state_feature is not None

    @property
    def n_delays(self) -> int:
        """Number of inference delays the model is trained on: `0..rtc_max_delay`."""
        return self.rtc_max_delay + 1

    @property
    def action_window_size(self) -> int:
        return self.rtc_max_delay + self.chunk_size

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, weight_decay=self.optimizer_weight_decay)

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if not self.image_features and not self.env_state_feature:
            raise ValueError(
                "The policy needs at least one camera (a VISUAL feature such as 'observation.images.wrist') "
                "or an environment state ('observation.environment_state') among its input features."
            )
        if self.rtc_prefix_attention == "shared_observation" and not self.image_features:
            raise ValueError(
                "`rtc_prefix_attention=shared_observation` shares the observation tokens between the delays "
                "of a sample, but without a camera the observation is one or two tokens (the states): there "
                "is nothing to share, and the packed sequence under block masks costs more than running each "
                "delay separately (about 2x on CPU). Use `--policy.rtc_prefix_attention=full`."
            )
        reads_state = self.use_state_token or self.predict_relative_actions
        if self.robot_state_feature is not None and not reads_state:
            logging.getLogger(__name__).warning(
                "The policy reads no '%s': `use_state_token=false` and `predict_relative_actions=false`. Its "
                "predictions will not depend on the robot state. Set `--policy.use_state_token=true` to give "
                "the state its own encoder token.",
                OBS_STATE,
            )
        if self.predict_relative_actions:
            if self.robot_state_feature is None:
                raise ValueError(
                    f"`predict_relative_actions=true` predicts actions relative to '{OBS_STATE}', but the "
                    f"input features have none. Add '{OBS_STATE}' to the dataset or the input features, or "
                    "train with `--policy.predict_relative_actions=false`."
                )
            action_dim = self.action_feature.shape[0]
            state_dim = self.robot_state_feature.shape[0]
            if action_dim != state_dim:
                raise ValueError(
                    f"`predict_relative_actions=true` subtracts '{OBS_STATE}' from the action, but the "
                    f"action has {action_dim} dimensions and the state {state_dim}. Use a dataset whose "
                    "action and state live in the same space, or train with "
                    "`--policy.predict_relative_actions=false`."
                )

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        """The training window: W = rtc_max_delay + chunk_size action offsets from the observation's frame
        t, starting at k = first_action_index. For each delay d in 0..rtc_max_delay:

            offset  k            k+d                         k+d+chunk_size        k+W
                    [ prefix (d) | targets (chunk_size)       | rest (max_delay-d) ]

        The prefix is what executes while inference runs; the targets are the chunk that follows it. With
        `relative_anchor=last_action` the anchor's offset k-1 comes first (W + 1 offsets).
        """
        window = list(range(self.first_action_index, self.first_action_index + self.action_window_size))
        return [self.first_action_index - 1, *window] if self.anchors_on_last_action else window

    @property
    def anchors_on_last_action(self) -> bool:
        """Whether relative actions are measured from the last commanded action (`relative_anchor`)."""
        return self.predict_relative_actions and self.relative_anchor == "last_action"

    @property
    def reward_delta_indices(self) -> None:
        return None
