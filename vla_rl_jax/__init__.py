"""vla_rl_jax: outcome-reward RL (GRPO) for Vision-Language-Action policies as one compiled JAX program."""
