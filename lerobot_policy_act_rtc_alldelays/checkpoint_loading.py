"""Checks of a checkpoint's weights file as the policy loads it: `from_pretrained`, and so `make_policy`,
`lerobot-train --policy.path`, `--resume` and `lerobot-eval`."""

import json
import logging
from pathlib import Path

from safetensors import SafetensorError, safe_open
from torch import nn

from .config_checks import RTC_PREFIX_ATTENTIONS
from .dataset_derived import loaded_without

# Weights a checkpoint of an earlier release lacks, which loading copes without. `stats_fingerprint` and
# `trained_prefix_attention` (before 0.2.0): the load hooks take their absence as "not recorded". The prefix
# mask token (before 0.3.0, like the state token): only training reads it, and it is learned from there.
OPTIONAL_WEIGHTS = ("stats_fingerprint", "trained_prefix_attention", "model.prefix_mask_embed.weight")
MAX_NAMED = 10  # missing weights named in the error; a checkpoint of another model lacks hundreds
# Fields whose default changed what the policy does: (today's default, the value of the releases before the
# field existed). A checkpoint of such a release has no entry for the field in its config.json, so the config
# built from that file holds today's default.
EARLIER_RELEASE_VALUES = {"rtc_blend_steps": (None, 0), "rtc_delay0_loss_share": (0.5, None)}


def stored_weight_names(model_file: str) -> set[str]:
    """The names of the tensors in `model_file`, read from its header. Refuses a truncated, emptied or
    otherwise corrupt file, which safetensors reports only as "incomplete metadata" or "header too small"."""
    try:
        with safe_open(model_file, framework="pt") as weights:
            return set(weights.keys())
    except SafetensorError as error:
        raise ValueError(
            f"The weights file '{model_file}' is truncated or corrupt ({error}), so the policy cannot be "
            "loaded from it. Download the checkpoint again (from the Hub: `force_download=True`, or delete "
            "it from the Hugging Face cache), or save the policy again (`save_pretrained`, or another "
            "checkpoint of the training run)."
        ) from error


def adopt_earlier_release_values(config, config_file: Path) -> None:
    """Sets the fields of `EARLIER_RELEASE_VALUES` that `config_file` (the checkpoint's config.json) lacks to
    the values the checkpoint was saved under, so it predicts, and trains on, exactly as before. A field that
    differs from today's default was set by the user (`--policy.<field>`) and is kept. Without a config.json
    beside the weights nothing is known of their release, and nothing changes."""
    if not config_file.is_file():
        return
    saved = json.loads(config_file.read_text())
    for name, (default, earlier) in EARLIER_RELEASE_VALUES.items():
        if name not in saved and hasattr(config, name) and getattr(config, name) == default:
            logging.info("%s has no '%s' (an earlier release): loading it with %s=%s, as it was saved.",
                         config_file, name, name, earlier)
            setattr(config, name, earlier)


def refuse_missing_weights(policy: nn.Module, stored: set[str], model_file: str) -> None:
    """Refuses a loaded checkpoint that lacked weights of `policy`: they would keep their random initial
    values, and the policy would predict from them. `stored` are the names `model_file` holds."""
    missing = sorted(set(policy.state_dict()) - stored - set(OPTIONAL_WEIGHTS))
    if not missing:
        return
    named = ", ".join(missing[:MAX_NAMED])
    if len(missing) > MAX_NAMED:
        named += f" and {len(missing) - MAX_NAMED} more"
    raise ValueError(
        f"The checkpoint '{model_file}' lacks {len(missing)} weights of this policy: {named}. The policy "
        "would predict with their random initial values. The checkpoint was saved by a policy of another "
        "configuration (load it with its own config.json, not with other architecture fields such as "
        "`use_vae`, `rtc_max_delay` or the input features) or is incomplete: save it again from the trained "
        "policy."
    )


def refuse_other_attention_mode(policy: nn.Module, incompatible_keys) -> None:
    """Post hook of `load_state_dict` (which `from_pretrained` uses): refuses weights trained with the other
    `rtc_prefix_attention` mode."""
    configured = policy.config.rtc_prefix_attention
    if loaded_without(incompatible_keys, "trained_prefix_attention"):
        logging.warning(
            "The loaded weights do not record the attention mode they were trained with; assuming "
            "rtc_prefix_attention=%s as configured.",
            configured,
        )
    else:
        code = int(policy.trained_prefix_attention)
        if not 0 <= code < len(RTC_PREFIX_ATTENTIONS):
            raise ValueError(
                f"The checkpoint's `trained_prefix_attention` is {code}, not an index of "
                f"{RTC_PREFIX_ATTENTIONS}: the checkpoint is corrupt. Load an intact checkpoint."
            )
        trained = RTC_PREFIX_ATTENTIONS[code]
        if trained != configured:
            raise ValueError(
                f"These weights were trained with `rtc_prefix_attention={trained}`, but the policy is "
                f"configured with `rtc_prefix_attention={configured}`: the observation tokens would attend "
                "to other tokens than in training and every prediction would change. Load them with "
                f"`--policy.rtc_prefix_attention={trained}` (or `rtc_prefix_attention='{trained}'` in the "
                "config); to use the other mode, train a policy with it."
            )
