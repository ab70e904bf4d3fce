"""Small, cheap frames from LeRobot's MetaWorld env: rendered at a policy's image size, without shadows.

LeRobot's `MetaworldEnv` renders 480 px frames: its `observation_width` and `observation_height` only set the
size its observation space declares (LeRobot 0.4.4 and 0.6.1 both create MetaWorld's MuJoCo env at MuJoCo's
480 px default). On a CPU (Mesa's software OpenGL), rendering is nearly all of an image step's cost, and
most of it does not shrink with the frame: for its shadows MuJoCo draws every geom once more per light (the
scene has 3), about half of a frame's cost at any size. Measured on 2 idle cores, per step: 145 ms at 480
px, 65 ms at 64 px with shadows, 37 ms without.

`render_frames_at` makes the MuJoCo env render square frames of a given size without shadows. Recording and
evaluating a policy on small images then costs a fraction, and a policy that does not resize its inputs
(LeRobot's ACT) gets frames of its own size. The frames differ from LeRobot's frames resized to that size
(the shadows, and rendering at the size rather than resizing): record and evaluate with the same size.
"""

from typing import Any

LEROBOT_FRAME_SIZE = 480  # LeRobot's MetaworldEnv's default observation_width and observation_height


def frame_size_kwargs(size: int | None) -> dict[str, int]:
    """LeRobot's `MetaworldEnv` arguments that declare `size` px square frames; none for None (its 480 px)."""
    if size is None:
        return {}
    if size <= 0:
        raise ValueError(f"A frame size is a positive number of pixels, got {size}.")
    return {"observation_width": size, "observation_height": size}


def render_frames_at(mujoco_env: Any, size: int) -> None:
    """Makes `mujoco_env` (MetaWorld's, inside LeRobot's env) render `size` px square frames without shadows.
    Both are fixed when its renderer first renders (the OpenGL context is made then), so this must come
    before."""
    renderer = mujoco_env.mujoco_renderer
    if renderer.viewer is not None:
        raise RuntimeError(
            "The MetaWorld env has rendered already, at its size: set the frame size before its first frame."
        )
    renderer.width = renderer.height = size
    mujoco_env.model.vis.quality.shadowsize = 0  # no shadow map: MuJoCo renders no shadows
