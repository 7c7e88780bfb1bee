"""Group-relative advantages and the dynamic-sampling mask, on rewards f32[B, G].

    grpo     A = (R - mean_g R) / (std_g R + eps), std unbiased (ddof = 1), as SimpleVLA-RL/veRL
    rloo     A = R - mean of the OTHER G - 1 rewards of the group
    dr_grpo  A = R - mean_g R (no std normalisation)

Dynamic sampling: a group whose rewards are all equal (all succeed or all fail) has zero advantage
everywhere and carries no gradient; its weight is 0 and the loss is normalised over the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def grpo(rewards: jax.Array, eps: float) -> jax.Array:
  g = rewards.shape[-1]
  mean = rewards.mean(-1, keepdims=True)
  std = jnp.sqrt(jnp.sum((rewards - mean) ** 2, -1, keepdims=True) / (g - 1))
  return (rewards - mean) / (std + eps)


def rloo(rewards: jax.Array, eps: float) -> jax.Array:
  del eps
  g = rewards.shape[-1]
  others = (rewards.sum(-1, keepdims=True) - rewards) / (g - 1)
  return rewards - others


def dr_grpo(rewards: jax.Array, eps: float) -> jax.Array:
  del eps
  return rewards - rewards.mean(-1, keepdims=True)


ADVANTAGES = {"grpo": grpo, "rloo": rloo, "dr_grpo": dr_grpo}


def dynamic_sampling_mask(rewards: jax.Array) -> jax.Array:
  """f32[B, G]: 1 for every trajectory of a group whose rewards are not all equal, else 0."""
  informative = jnp.max(rewards, -1, keepdims=True) > jnp.min(rewards, -1, keepdims=True)
  return jnp.broadcast_to(informative, rewards.shape).astype(jnp.float32)


def compute(name: str, rewards: jax.Array, eps: float, dynamic_sampling: bool):
  """-> (advantages f32[B, G], trajectory weights f32[B, G])."""
  adv = ADVANTAGES[name](rewards, eps)
  weight = dynamic_sampling_mask(rewards) if dynamic_sampling else jnp.ones_like(rewards)
  return adv, weight
