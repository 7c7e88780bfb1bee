"""OpenVLA-OFT's architecture (model.name="oft"): fused ViT towers, MLP projector, Llama-2 decoder,
and a block of K*D action positions decoded in parallel, scored on the 256 action-bin ids.

Built so that an imported OpenVLA-OFT checkpoint computes what it was trained to:

- Vision: up to two ViT towers on each camera view (env.camera "agentview" or "agentview,wrist":
  the views arrive side by side, envs.base.policy_image; each is run on its own with the same
  position embeddings and their patch tokens are concatenated in view order, as OFT feeds its
  third-person and wrist images), both towers with patch size p, features concatenated per
  patch on the channel axis (OpenVLA's "fused" SigLIP-So400m/14 + DINOv2-L/14 backbone). Pre-LN
  blocks (LayerNorm eps 1e-6, MHA with biases, GELU MLP), learned position embeddings over the
  patches only. SigLIP: tanh-approximate GELU, no class token, pixels scaled to [-1, 1]. DINOv2:
  exact GELU, a class token and `num_registers` register tokens (no position embedding on them, as
  timm's reg4 models), LayerScale on both residual branches, ImageNet mean/std pixels; only patch
  tokens are kept. OpenVLA feeds the LLM the output of each tower's SECOND-TO-LAST block with no
  final norm, so a tower's `depth` is the number of blocks actually run: an importer drops the
  checkpoint's last block (and SigLIP's unused attention-pool head), and param_count counts only
  what runs (SigLIP-So400m: 27 blocks + head = 428M published, 26 blocks here).
  The patch embedding is a Dense on (row, col, channel)-ordered patch pixels: a conv kernel
  [width, 3, p, p] imports as kernel.transpose(2, 3, 1, 0).reshape(p * p * 3, width).
- Projector: Linear(V -> 4V), GELU, Linear(4V -> W), GELU, Linear(W -> W); V = sum of tower widths.
- Decoder: Llama-2: RMSNorm (model.norm_eps), RoPE (model.rope_theta, HF's rotate-half layout, as
  HF checkpoints store q/k), grouped-query attention (model.num_heads, model.num_kv_heads), SwiGLU
  MLP of model.mlp_dim, no biases, untied LM head [W, vocab].
- Sequence: [BOS, image patches (projected; view after view), proprio token (model.use_proprio),
  instruction tokens after BOS, K*D action positions]. Every tokenizer starts the text with BOS, so BOS (text
  position 0) goes first and the patches follow it, as OpenVLA inserts them after BOS. Action
  positions are fed a zero embedding (OFT's empty action embeddings). Mask: the prefix is causal;
  padding text tokens (id 0) are never attended to; action positions see the whole valid prefix
  and each other (bidirectional). RoPE positions count valid tokens only, so padding inside the
  instruction leaves the positions an unpadded prompt would have.
- Head: the final RMSNorm and LM head run only at the action positions, on the kernel's LAST 256
  columns (the action-bin ids, tokenizer.py): f32[B, K*D, 256], TinyVLA's contract. No ordinal head
  (config validation requires model.ordinal_head=False for oft).

Scale: each tower's and the decoder's blocks run under nn.scan (model.scan_layers; parameters gain
a leading "layers" axis), each block under jax.checkpoint with model.remat's policy; compute in
model.dtype with fp32 master weights, attention logits and softmax in fp32. Every parameter carries
logical axis names (sharding.LOGICAL_RULES); activations get sharding constraints (batch over data x
fsdp, heads and MLP hidden over tensor) when the module is given the mesh (builders does).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vla_rl_jax import config as config_lib
from vla_rl_jax import sharding
from vla_rl_jax.config import ModelConfig, TowerConfig
from vla_rl_jax.types import PolicyObs

_init = nn.initializers.normal(stddev=0.02)
_zeros = nn.initializers.zeros
_ones = nn.initializers.ones
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
VIT_LN_EPS = 1e-6

REMAT_POLICIES = {
    "full": None,  # save nothing but the block's inputs
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
assert {"none", *REMAT_POLICIES} == set(config_lib.REMAT_POLICIES)  # validation allows these


def _p(init, names):
  return nn.with_logical_partitioning(init, names)


def _constrain(x: jax.Array, names: tuple, mesh: Mesh | None) -> jax.Array:
  """Activation sharding constraint by logical names (a no-op without a mesh or on one device)."""
  if mesh is None or mesh.size == 1:
    return x
  return sharding.constrain_logical(x, names, mesh)


def _dense(features, names, name, dt, pdt, use_bias, bias_names=None):
  return nn.Dense(features, name=name, dtype=dt, param_dtype=pdt, use_bias=use_bias,
                  kernel_init=_p(_init, names), bias_init=_p(_zeros, bias_names or names[-1:]))


def rope(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """positions int[B, S] -> (cos, sin) f32[B, S, head_dim] in HF Llama's rotate-half layout."""
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  freqs = positions.astype(jnp.float32)[..., None] * inv
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def _apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, S, H, hd] rotated by position: x cos + rotate_half(x) sin (in fp32)."""
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  rot = jnp.concatenate([-x2, x1], axis=-1)
  return (xf * cos[:, :, None] + rot * sin[:, :, None]).astype(x.dtype)


class Attention(nn.Module):
  """Multi-head (grouped-query when num_kv_heads < num_heads) attention; logits and softmax in
  fp32. x [B, S, W], mask bool[B, S, S] (query, key) or None, rope (cos, sin) or None -> [B, S, W]."""
  num_heads: int
  num_kv_heads: int
  use_bias: bool
  dtype: Any
  param_dtype: Any
  mesh: Mesh | None = None

  @nn.compact
  def __call__(self, x, mask=None, rope_cs=None):
    b, s, w = x.shape
    h, kvh = self.num_heads, self.num_kv_heads
    hd = w // h

    def proj(heads, name):
      return nn.DenseGeneral((heads, hd), use_bias=self.use_bias, name=name, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             kernel_init=_p(_init, ("embed", "heads", "kv")),
                             bias_init=_p(_zeros, ("heads", "kv")))(x)

    q, k, v = proj(h, "query"), proj(kvh, "key"), proj(kvh, "value")
    if rope_cs is not None:
      q, k = _apply_rope(q, *rope_cs), _apply_rope(k, *rope_cs)
    names = ("batch", "length", "act_heads", None)
    q, k, v = (_constrain(t, names, self.mesh) for t in (q, k, v))
    q = q.reshape(b, s, kvh, h // kvh, hd)
    logits = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.float32(math.sqrt(hd))
    if mask is not None:
      logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, s, h, hd)
    out = _constrain(out, names, self.mesh)
    return nn.DenseGeneral(w, axis=(-2, -1), use_bias=self.use_bias, name="out", dtype=self.dtype,
                           param_dtype=self.param_dtype,
                           kernel_init=_p(_init, ("heads", "kv", "embed")),
                           bias_init=_p(_zeros, ("norm",)))(out)


class ViTBlock(nn.Module):
  """Pre-LN ViT block (timm): x + [ls1 *] attn(ln1(x)); x + [ls2 *] mlp(ln2(x)). Returns (x, None)
  so nn.scan can stack it."""
  tower: TowerConfig
  layer_scale: bool
  approximate_gelu: bool
  dtype: Any
  param_dtype: Any
  mesh: Mesh | None = None

  @nn.compact
  def __call__(self, x):
    t, dt, pdt = self.tower, self.dtype, self.param_dtype

    def ln(name):
      return nn.LayerNorm(epsilon=VIT_LN_EPS, dtype=dt, param_dtype=pdt, name=name,
                          scale_init=_p(_ones, ("norm",)), bias_init=_p(_zeros, ("norm",)))

    def scale(h, name):
      if not self.layer_scale:
        return h
      # 1.0 from scratch (a plain residual); imported DINOv2 weights bring their trained gammas
      g = self.param(name, _p(_ones, ("norm",)), (t.width,), pdt)
      return h * g.astype(dt)

    h = Attention(t.num_heads, t.num_heads, True, dt, pdt, self.mesh, name="attn")(ln("ln1")(x))
    x = x + scale(h, "ls1")
    h = _dense(t.mlp_dim, ("embed", "mlp"), "mlp_in", dt, pdt, True)(ln("ln2")(x))
    h = _constrain(nn.gelu(h, approximate=self.approximate_gelu), ("batch", "length", "act_mlp"),
                   self.mesh)
    h = _dense(t.width, ("mlp", "embed"), "mlp_out", dt, pdt, True, ("norm",))(h)
    x = x + scale(h, "ls2")
    return _constrain(x, ("batch", "length", "act_embed"), self.mesh), None


class RMSNorm(nn.Module):
  """Llama's RMSNorm: x / rms(x) * scale, statistics in fp32."""
  eps: float
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", _p(_ones, ("norm",)), (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return xf.astype(self.dtype) * scale.astype(self.dtype)


class DecoderBlock(nn.Module):
  """Llama-2 block: x + attn(rms1(x)) with RoPE and GQA; x + W2(silu(W1 h) * W3 h). No biases.
  (x [B, S, W], mask bool[B, S, S], cos, sin f32[B, S, hd]) -> (x, None)."""
  cfg: ModelConfig
  mesh: Mesh | None = None

  @nn.compact
  def __call__(self, x, mask, cos, sin):
    c = self.cfg
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    h = RMSNorm(c.norm_eps, dt, pdt, name="attn_norm")(x)
    h = Attention(c.num_heads, c.num_kv_heads or c.num_heads, False, dt, pdt, self.mesh,
                  name="attn")(h, mask, (cos, sin))
    x = x + h
    h = RMSNorm(c.norm_eps, dt, pdt, name="mlp_norm")(x)
    gate = _dense(c.mlp_dim, ("embed", "mlp"), "gate", dt, pdt, False)(h)
    up = _dense(c.mlp_dim, ("embed", "mlp"), "up", dt, pdt, False)(h)
    h = _constrain(nn.silu(gate) * up, ("batch", "length", "act_mlp"), self.mesh)
    x = x + _dense(c.width, ("mlp", "embed"), "down", dt, pdt, False)(h)
    return _constrain(x, ("batch", "length", "act_embed"), self.mesh), None


def _stack(block_cls, n: int, cfg: ModelConfig, name: str, kwargs: dict, x, *broadcast):
  """n blocks of block_cls over x: nn.scan'ed (params stacked on a leading "layers" axis, under
  `name`) or a Python loop (params under name_0 .. name_{n-1}); each block remat'ed per cfg.remat."""
  cls = block_cls
  if cfg.remat != "none":
    cls = nn.remat(cls, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    scanned = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast,) * len(broadcast), length=n,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = scanned(**kwargs, name=name)(x, *broadcast)
    return x
  for i in range(n):
    x, _ = cls(**kwargs, name=f"{name}_{i}")(x, *broadcast)
  return x


class ViTTower(nn.Module):
  """patches f32[B, N, p*p*3] (already normalised for this tower) -> patch features [B, N, width]."""
  tower: TowerConfig
  cfg: ModelConfig
  kind: str  # "siglip" | "dinov2"
  mesh: Mesh | None = None

  @nn.compact
  def __call__(self, patches):
    t, c = self.tower, self.cfg
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    b, n, _ = patches.shape
    x = _dense(t.width, ("patch", "embed"), "patch_embed", dt, pdt, True, ("norm",))(patches)
    pos = self.param("pos_embed", _p(_init, (None, "embed")), (n, t.width), pdt)
    x = x + pos.astype(dt)
    dino = self.kind == "dinov2"
    prefix = 0
    if dino:
      prefix = 1 + t.num_registers
      tokens = self.param("prefix_tokens", _p(_init, (None, "embed")), (prefix, t.width), pdt)
      x = jnp.concatenate([jnp.broadcast_to(tokens.astype(dt), (b, prefix, t.width)), x], axis=1)
    x = _constrain(x, ("batch", "length", "act_embed"), self.mesh)
    kw = dict(tower=t, layer_scale=dino, approximate_gelu=not dino, dtype=dt, param_dtype=pdt,
              mesh=self.mesh)
    x = _stack(ViTBlock, t.depth, c, "layers", kw, x)
    return x[:, prefix:]


class OFTVLA(nn.Module):
  """(PolicyObs[B], ) -> action-bin logits f32[B, K*D, 256] (see the module docstring).

  `__call__(obs, action_inputs=None, return_hidden=False)`: action_inputs [B, K*D, W] replaces the
  zero action embeddings (tests use it to show action positions see each other); return_hidden also
  returns the decoder's final-normed hidden states f32[B, S, W] over the whole sequence, laid out as
  `layout` says.
  """
  cfg: ModelConfig
  num_action_tokens: int  # L = K * D
  mesh: Mesh | None = None

  def layout(self, image_size: int) -> dict[str, int]:
    """Sequence offsets: {"patches", "text", "actions", "length"}; text position t >= 1 (after
    BOS) sits at text + t - 1."""
    n = (image_size // self.cfg.patch_size) ** 2
    text = 1 + n + int(self.cfg.use_proprio)
    actions = text + self.cfg.max_text_len - 1
    return {"patches": 1, "text": text, "actions": actions,
            "length": actions + self.num_action_tokens}

  @nn.compact
  def __call__(self, obs: PolicyObs, action_inputs=None, return_hidden: bool = False):
    c = self.cfg
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    b, hh, ww, _ = obs.image.shape
    p = c.patch_size
    # V square views side by side (envs.base.policy_image): each through the towers on its own,
    # with the same position embeddings, and their patch tokens concatenated in view order (OFT)
    nv = ww // hh
    if nv * hh != ww:
      raise ValueError(f"image {hh}x{ww}: the policy's views must be {hh}x{hh} squares side by side")
    img = obs.image.astype(jnp.float32) / 255.0
    img = img.reshape(b, hh // p, p, nv, hh // p, p, 3).transpose(0, 3, 1, 4, 2, 5, 6)
    img = img.reshape(b * nv, (hh // p) ** 2, p, p, 3)
    feats = []
    if c.siglip.depth:
      x = ((img - 0.5) / 0.5).reshape(img.shape[:2] + (-1,)).astype(dt)
      feats.append(ViTTower(c.siglip, c, "siglip", self.mesh, name="siglip")(x))
    if c.dinov2.depth:
      x = ((img - IMAGENET_MEAN) / IMAGENET_STD).reshape(img.shape[:2] + (-1,)).astype(dt)
      feats.append(ViTTower(c.dinov2, c, "dinov2", self.mesh, name="dinov2")(x))
    v = jnp.concatenate(feats, axis=-1)
    v = v.reshape(b, nv * v.shape[1], v.shape[2])                  # [B, V * patches, vision]
    vdim = v.shape[-1]
    v = _dense(4 * vdim, ("embed", "mlp"), "projector_fc1", dt, pdt, True)(v)
    v = _dense(c.width, ("mlp", "embed"), "projector_fc2", dt, pdt, True, ("norm",))(nn.gelu(
        v, approximate=False))
    v = _dense(c.width, ("embed", "mlp"), "projector_fc3", dt, pdt, True, ("norm",))(nn.gelu(
        v, approximate=False))
    n_patch = v.shape[1]

    embed = nn.Embed(c.vocab_size, c.width, dtype=dt, param_dtype=pdt, name="tok_embed",
                     embedding_init=_p(_init, ("vocab", "embed")))
    text = embed(obs.text)
    text_valid = obs.text != 0
    parts = [text[:, :1], v]
    valid = [text_valid[:, :1], jnp.ones((b, n_patch), bool)]
    if c.use_proprio:
      prop = _dense(c.width, (None, "embed"), "proprio_fc1", dt, pdt, True, ("norm",))(
          obs.proprio.astype(dt))
      prop = _dense(c.width, ("embed", "mlp"), "proprio_fc2", dt, pdt, True, ("norm",))(
          nn.gelu(prop, approximate=False))
      parts.append(prop[:, None])
      valid.append(jnp.ones((b, 1), bool))
    n_act = self.num_action_tokens
    act = (jnp.zeros((b, n_act, c.width), dt) if action_inputs is None
           else action_inputs.astype(dt))
    parts += [text[:, 1:], act]
    valid += [text_valid[:, 1:], jnp.ones((b, n_act), bool)]
    x = _constrain(jnp.concatenate(parts, axis=1), ("batch", "length", "act_embed"), self.mesh)
    valid = jnp.concatenate(valid, axis=1)                                  # [B, S]
    s = x.shape[1]
    is_act = jnp.arange(s) >= s - n_act
    causal = jnp.arange(s)[:, None] >= jnp.arange(s)[None, :]
    allowed = causal | (is_act[:, None] & is_act[None, :])                  # [S, S] (query, key)
    mask = allowed[None] & valid[:, None, :]                                # [B, S, S]
    positions = jnp.cumsum(valid, axis=1) - 1
    cos, sin = rope(positions, c.width // c.num_heads, c.rope_theta)

    x = _stack(DecoderBlock, c.depth, c, "layers", dict(cfg=c, mesh=self.mesh), x, mask, cos, sin)
    final_norm = RMSNorm(c.norm_eps, dt, pdt, name="final_norm")
    kernel = self.param("lm_head", _p(_init, ("embed", "vocab")), (c.width, c.vocab_size), pdt)
    h_act = final_norm(x[:, s - n_act:])
    logits = jnp.einsum("blw,wv->blv", h_act, kernel[:, -c.num_bins:].astype(dt),
                        preferred_element_type=jnp.float32)
    if return_hidden:
      return logits, final_norm(x).astype(jnp.float32)
    return logits


COMPONENTS = ("siglip", "dinov2", "projector", "proprio", "embed", "decoder", "head")


def _component(top: str) -> str:
  if top.startswith("projector"):
    return "projector"
  if top.startswith("proprio"):
    return "proprio"
  if top == "tok_embed":
    return "embed"
  if top == "lm_head":
    return "head"
  if top in ("siglip", "dinov2"):
    return top
  return "decoder"  # layers*, final_norm


def param_count(cfg, proprio_size: int = 8, num_action_tokens: int = 7) -> dict[str, int]:
  """Parameters per component of cfg's model (a resolved Config with model.name="oft"), from
  jax.eval_shape of the real init: nothing is allocated, so it works for the 7b variant on a laptop.

  Returns {"siglip", "dinov2", "projector", "proprio", "embed", "decoder", "head", "total"}
  ("decoder" = the blocks and the final norm). proprio_size only matters with model.use_proprio.
  """
  model = OFTVLA(cfg.model, num_action_tokens=num_action_tokens)
  s = cfg.env.image_size
  obs = PolicyObs(image=jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8),
                  text=jax.ShapeDtypeStruct((1, cfg.model.max_text_len), jnp.int32),
                  proprio=jax.ShapeDtypeStruct((1, proprio_size), jnp.float32))
  abstract = jax.eval_shape(lambda o: nn.meta.unbox(model.init(jax.random.PRNGKey(0), o)["params"]),
                            obs)
  out = dict.fromkeys(COMPONENTS, 0)
  for top, sub in abstract.items():
    out[_component(top)] += sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(sub))
  out["total"] = sum(out[k] for k in COMPONENTS)
  return out
