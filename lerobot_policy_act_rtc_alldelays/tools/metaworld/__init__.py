"""The MetaWorld env and closed loop: state env, position targets, frames, demos, delay sweep, main job."""
