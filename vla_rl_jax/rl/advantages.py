"""Group-relative advantages and the dynamic-sampling mask, on rewards f32[B, G].

Estimators are registered by name (config.rl.advantage; vla_rl_jax.rl.registry.register_advantage)
with the signature fn(rewards f32[B, G], eps, weight f32[B, G] | None = None, **options) -> f32[B, G];
weight is the dynamic-sampling mask of the trajectories the update keeps (None: all of them).

    grpo          A = (R - mean_g R) / (std_g R + eps), std unbiased (ddof = 1), as SimpleVLA-RL/veRL
    rloo          A = R - mean of the OTHER G - 1 rewards of the group
    dr_grpo       A = R - mean_g R (no std normalisation)
    reinforce_pp  REINFORCE++ with a group baseline: x = R - mean_g R, then normalised over the
                  batch: A = (x - m) / (s + eps), with m and s the weighted mean and population std
                  (ddof = 0) of x over the surviving trajectories (weight > 0; all of them when
                  dynamic sampling is off). m is 0 up to rounding (each group's x sums to 0); the
                  batch std replaces GRPO's per-group std.

A group whose rewards are all equal (all succeed or all fail) has advantage exactly 0.0 under every
estimator (`compute` enforces it for registered ones too): masked explicitly, since the formulas only give 0 in exact arithmetic (under jit a 1-ulp
error in the mean, e.g. from a fused multiply-add, divided by std + eps reaches 0.05).
Dynamic sampling: such a group carries no gradient; its weight is 0 and the loss is normalised over
the rest.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from vla_rl_jax.rl import registry
from vla_rl_jax.rl.registry import register_advantage


def _informative(rewards: jax.Array) -> jax.Array:
  """bool[B, 1]: the group's rewards are not all equal (max and min are exact: no rounding)."""
  return jnp.max(rewards, -1, keepdims=True) > jnp.min(rewards, -1, keepdims=True)


@register_advantage("grpo")
def grpo(rewards: jax.Array, eps: float, weight: jax.Array | None = None) -> jax.Array:
  del weight
  g = rewards.shape[-1]
  mean = rewards.mean(-1, keepdims=True)
  std = jnp.sqrt(jnp.sum((rewards - mean) ** 2, -1, keepdims=True) / (g - 1))
  # an all-equal group's rounding residue is ~1 ulp over std ~1 ulp + eps: not small, so mask
  return jnp.where(_informative(rewards), (rewards - mean) / (std + eps), 0.0)


@register_advantage("rloo")
def rloo(rewards: jax.Array, eps: float, weight: jax.Array | None = None) -> jax.Array:
  del eps, weight
  g = rewards.shape[-1]
  others = (rewards.sum(-1, keepdims=True) - rewards) / (g - 1)
  return jnp.where(_informative(rewards), rewards - others, 0.0)


@register_advantage("dr_grpo")
def dr_grpo(rewards: jax.Array, eps: float, weight: jax.Array | None = None) -> jax.Array:
  del eps, weight
  return jnp.where(_informative(rewards), rewards - rewards.mean(-1, keepdims=True), 0.0)


@register_advantage("reinforce_pp")
def reinforce_pp(rewards: jax.Array, eps: float, weight: jax.Array | None = None) -> jax.Array:
  w = jnp.ones_like(rewards) if weight is None else weight
  x = rewards - rewards.mean(-1, keepdims=True)
  n = jnp.maximum(jnp.sum(w), 1.0)
  m = jnp.sum(w * x) / n
  s = jnp.sqrt(jnp.sum(w * (x - m) ** 2) / n)
  return jnp.where(_informative(rewards), (x - m) / (s + eps), 0.0)


def dynamic_sampling_mask(rewards: jax.Array) -> jax.Array:
  """f32[B, G]: 1 for every trajectory of a group whose rewards are not all equal, else 0."""
  return jnp.broadcast_to(_informative(rewards), rewards.shape).astype(jnp.float32)


def compute(name: str, rewards: jax.Array, eps: float, dynamic_sampling: bool,
            options: Mapping[str, Any] | tuple = ()):
  """-> (advantages f32[B, G], trajectory weights f32[B, G]) of the registered estimator `name`
  with its resolved `options` (config.rl.advantage_kwargs)."""
  weight = dynamic_sampling_mask(rewards) if dynamic_sampling else jnp.ones_like(rewards)
  fn = registry.get("advantage", name).fn
  adv = fn(rewards, eps, weight, **dict(options))
  return jnp.where(_informative(rewards), adv, 0.0), weight
