"""Pad-to-square-and-resize for camera images, shared by the preprocessor and dataset generation.

One function serves every place that resizes, so a dataset recorded through it and a policy evaluated
through the preprocessor see the same pixels.
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.configs.types import FeatureType, PipelineFeatureType, PolicyFeature
from lerobot.processor import ObservationProcessorStep, ProcessorStepRegistry
from torch import Tensor


def pad_to_square_and_resize(images: Tensor, size: int) -> Tensor:
    """[..., C, H, W] float images -> [..., C, size, size].

    The shorter side is zero-padded symmetrically (so the aspect ratio is kept), then the square is
    resized with antialiased bilinear interpolation.
    """
    height, width = images.shape[-2:]
    side = max(height, width)
    pad_h, pad_w = side - height, side - width
    # F.pad takes (left, right, top, bottom) for the last two dims.
    square = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    if side == size:
        return square
    leading = square.shape[:-3]
    flat = square.reshape(-1, *square.shape[-3:])  # [N, C, side, side]
    resized = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0).reshape(*leading, *resized.shape[-3:])


@ProcessorStepRegistry.register("act_relative_rtc_alldelays_pad_square_resize")
@dataclass
class PadToSquareResizeProcessorStep(ObservationProcessorStep):
    """Pads every camera image of the observation to a square and resizes it to `size` pixels."""

    image_keys: list[str]
    size: int

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        for key in self.image_keys:
            if key in observation:
                image = observation[key]
                observation[key] = pad_to_square_and_resize(image.to(torch.float32), self.size)
        return observation

    def get_config(self) -> dict[str, Any]:
        return {"image_keys": list(self.image_keys), "size": self.size}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        observation_features = features.get(PipelineFeatureType.OBSERVATION, {})
        for key in self.image_keys:
            feature = observation_features.get(key)
            if feature is not None and feature.type is FeatureType.VISUAL:
                observation_features[key] = PolicyFeature(
                    type=feature.type, shape=(feature.shape[0], self.size, self.size)
                )
        return features
