"""Group-relative advantages and the dynamic-sampling mask, on rewards f32[B, G].

    grpo     A = (R - mean_g R) / (std_g R + eps), std unbiased (ddof = 1), as SimpleVLA-RL/veRL
    rloo     A = R - mean of the OTHER G - 1 rewards of the group
    dr_grpo  A = R - mean_g R (no std normalisation)

A group whose rewards are all equal (all succeed or all fail) has advantage exactly 0.0 under every
estimator: masked explicitly, since the formulas only give 0 in exact arithmetic (under jit a 1-ulp
error in the mean, e.g. from a fused multiply-add, divided by std + eps reaches 0.05).
Dynamic sampling: such a group carries no gradient; its weight is 0 and the loss is normalised over
the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _informative(rewards: jax.Array) -> jax.Array:
  """bool[B, 1]: the group's rewards are not all equal (max and min are exact: no rounding)."""
  return jnp.max(rewards, -1, keepdims=True) > jnp.min(rewards, -1, keepdims=True)


def grpo(rewards: jax.Array, eps: float) -> jax.Array:
  g = rewards.shape[-1]
  mean = rewards.mean(-1, keepdims=True)
  std = jnp.sqrt(jnp.sum((rewards - mean) ** 2, -1, keepdims=True) / (g - 1))
  # an all-equal group's rounding residue is ~1 ulp over std ~1 ulp + eps: not small, so mask
  return jnp.where(_informative(rewards), (rewards - mean) / (std + eps), 0.0)


def rloo(rewards: jax.Array, eps: float) -> jax.Array:
  del eps
  g = rewards.shape[-1]
  others = (rewards.sum(-1, keepdims=True) - rewards) / (g - 1)
  return jnp.where(_informative(rewards), rewards - others, 0.0)


def dr_grpo(rewards: jax.Array, eps: float) -> jax.Array:
  del eps
  return jnp.where(_informative(rewards), rewards - rewards.mean(-1, keepdims=True), 0.0)


ADVANTAGES = {"grpo": grpo, "rloo": rloo, "dr_grpo": dr_grpo}


def dynamic_sampling_mask(rewards: jax.Array) -> jax.Array:
  """f32[B, G]: 1 for every trajectory of a group whose rewards are not all equal, else 0."""
  return jnp.broadcast_to(_informative(rewards), rewards.shape).astype(jnp.float32)


def compute(name: str, rewards: jax.Array, eps: float, dynamic_sampling: bool):
  """-> (advantages f32[B, G], trajectory weights f32[B, G])."""
  adv = ADVANTAGES[name](rewards, eps)
  weight = dynamic_sampling_mask(rewards) if dynamic_sampling else jnp.ones_like(rewards)
  return adv, weight
