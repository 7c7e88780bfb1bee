"""The policy as pure functions: sample a chunk of action tokens, and score given tokens.

    sample(params, obs, rng, temperature) -> (actions f32[B, K, D], tokens i32[B, L], logp f32[B, L])
        rng: one key, or one key per example (u32[B, 2])
    log_prob(params, obs, tokens, temperature) -> (logp f32[B, L], entropy f32[B, L])

Both go through `_tempered_log_softmax`, so the log-probs stored at rollout time and the ones
recomputed in the update are the same function of the same inputs: the first PPO ratio is exactly 1.
temperature == 0 means greedy decoding (evaluation); its log-probs are those of the untempered policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vla_rl_jax.models import tokenizer
from vla_rl_jax.types import PolicyObs


def _tempered_log_softmax(logits: jax.Array, temperature: float) -> jax.Array:
  t = temperature if temperature > 0 else 1.0
  return jax.nn.log_softmax(logits / t, axis=-1)


@dataclasses.dataclass(frozen=True)
class Policy:
  """Binds a model's apply function to the action layout (K steps x D dims, 256 bins each)."""
  apply_fn: Callable[[Any, PolicyObs], jax.Array]  # params, obs[B] -> logits f32[B, L, 256]
  chunk_size: int  # K
  action_dim: int  # D

  @property
  def num_tokens(self) -> int:
    return self.chunk_size * self.action_dim

  def sample(self, params, obs: PolicyObs, rng: jax.Array, temperature: float):
    logp_all = _tempered_log_softmax(self.apply_fn(params, obs), temperature)
    if temperature > 0 and rng.ndim > 1:
      # one key per example: the draw of an example does not depend on the batch it sits in
      # (micro-batching and the number of shards leave samples unchanged)
      tokens = jax.vmap(lambda k, lp: jax.random.categorical(k, lp, axis=-1))(rng, logp_all)
      tokens = tokens.astype(jnp.int32)
    elif temperature > 0:
      tokens = jax.random.categorical(rng, logp_all, axis=-1).astype(jnp.int32)
    else:
      tokens = jnp.argmax(logp_all, axis=-1).astype(jnp.int32)
    logp = jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
    actions = tokenizer.bins_to_actions(tokens).reshape(tokens.shape[0], self.chunk_size,
                                                        self.action_dim)
    return actions, tokens, logp

  def log_prob(self, params, obs: PolicyObs, tokens: jax.Array, temperature: float):
    logp_all = _tempered_log_softmax(self.apply_fn(params, obs), temperature)
    logp = jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy
