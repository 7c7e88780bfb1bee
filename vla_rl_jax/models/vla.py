"""A small VLA with OpenVLA-OFT's shape: patch encoder + instruction tokens + transformer + a
parallel-decoded action block (K*D learned action queries, one forward pass, non-causal).

Parameters carry logical axis names (embed, mlp, heads, kv, vocab, patch) via
`nn.with_logical_partitioning`; sharding.py maps them onto the ("data", "fsdp", "tensor") mesh.
The head scores the 256 action bins only (the last 256 vocabulary ids); see tokenizer.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vla_rl_jax.config import ModelConfig
from vla_rl_jax.models import tokenizer
from vla_rl_jax.types import PolicyObs

_init = nn.initializers.normal(stddev=0.02)


def _dense(features, names, name, dtype, param_dtype, use_bias=True):
  return nn.Dense(features, name=name, dtype=dtype, param_dtype=param_dtype, use_bias=use_bias,
                  kernel_init=nn.with_logical_partitioning(_init, names))


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, mask):
    c = self.cfg
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    h = nn.LayerNorm(dtype=dt, param_dtype=pdt, name="ln1")(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=c.num_heads, dtype=dt, param_dtype=pdt, name="attn",
        kernel_init=nn.with_logical_partitioning(_init, ("embed", "heads", "kv")),
        out_kernel_init=nn.with_logical_partitioning(_init, ("heads", "kv", "embed")),
    )(h, h, mask=mask)
    x = x + h
    h = nn.LayerNorm(dtype=dt, param_dtype=pdt, name="ln2")(x)
    h = _dense(c.mlp_dim, ("embed", "mlp"), "mlp_in", dt, pdt)(h)
    h = _dense(c.width, ("mlp", "embed"), "mlp_out", dt, pdt)(nn.gelu(h))
    return x + h


class TinyVLA(nn.Module):
  """(PolicyObs[B], ) -> action-bin logits f32[B, K*D, 256]."""
  cfg: ModelConfig
  num_action_tokens: int  # L = K * D

  @nn.compact
  def __call__(self, obs: PolicyObs) -> jax.Array:
    c = self.cfg
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    img = obs.image.astype(dt) / 127.5 - 1.0
    # Patchify by reshape + one matmul (the same map as a stride-p conv, much cheaper to
    # differentiate on CPU).
    b, h, w, _ = img.shape
    p = c.patch_size
    img = img.reshape(b, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = _dense(c.width, ("patch", "embed"), "patch_embed", dt, pdt)(
        img.reshape(b, (h // p) * (w // p), p * p * 3))
    n_patch = patches.shape[1]
    pos = self.param("pos_embed", nn.with_logical_partitioning(_init, (None, "embed")),
                     (n_patch + c.max_text_len + self.num_action_tokens, c.width), pdt)
    tok_embed = nn.Embed(c.vocab_size, c.width, dtype=dt, param_dtype=pdt, name="tok_embed",
                         embedding_init=nn.with_logical_partitioning(_init, ("vocab", "embed")))
    text = tok_embed(obs.text)
    queries = self.param("action_queries", nn.with_logical_partitioning(_init, (None, "embed")),
                         (self.num_action_tokens, c.width), pdt)
    parts = [patches, text, jnp.broadcast_to(queries.astype(dt), (b,) + queries.shape)]
    x = jnp.concatenate(parts, axis=1) + pos.astype(dt)
    valid = [jnp.ones((b, n_patch), bool), obs.text != 0, jnp.ones((b, self.num_action_tokens), bool)]
    if obs.proprio.shape[-1]:
      prop = _dense(c.width, (None, "embed"), "proprio_embed", dt, pdt)(obs.proprio.astype(dt))
      x = jnp.concatenate([x, prop[:, None, :]], axis=1)
      valid.append(jnp.ones((b, 1), bool))
    # Padding text tokens are never attended to; everything else attends bidirectionally.
    mask = jnp.concatenate(valid, axis=1)[:, None, None, :]
    for i in range(c.depth):
      x = Block(c, name=f"block{i}")(x, mask)
    x = nn.LayerNorm(dtype=dt, param_dtype=pdt, name="ln_f")(x)
    start = n_patch + c.max_text_len
    act = x[:, start:start + self.num_action_tokens]
    logits = _dense(256, ("embed", "vocab"), "action_head", dt, pdt)(act)
    if c.ordinal_head:
      # A bias linear in each bin's action value: one direction in the hidden state moves mass
      # across ALL bins coherently, where the per-bin head must learn 256 separate logits. Small
      # policies learn from few rollouts with it; imported LM heads set ordinal_head=False.
      values = jnp.asarray(tokenizer.bins_to_actions(jnp.arange(256)), dt)
      slope = _dense(1, ("embed", None), "ordinal_slope", dt, pdt)(act)
      logits = logits + c.ordinal_scale * slope * values
    return logits.astype(jnp.float32)
