"""Pure, jittable environments (brax Env/State contract); never imports vla_rl_jax."""
