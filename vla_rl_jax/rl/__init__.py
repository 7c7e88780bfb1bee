"""RL core on arrays: advantages, dynamic-sampling masks, the LOSSES registry. Never calls the model."""
