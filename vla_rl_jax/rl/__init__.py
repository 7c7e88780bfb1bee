"""RL core on arrays: loss and advantage registries, advantages, dynamic sampling. Never calls the model."""
