"""OpenVLA-OFT checkpoint (HF "prismatic" names, torch layouts) <-> the "oft" model's parameter tree.

Pure numpy functions: `import_params(flat, model_cfg)` maps a flat {name: array} dict, as read from
OpenVLA-OFT's safetensors shards, to our parameter tree (models/oft.py); `export_params` is its
inverse (tests build synthetic checkpoints with it). Any missing key, unexpected key or wrong shape
raises CheckpointImportError naming the key, the expected and the found shape.

Source names (OpenVLA's PrismaticVisionBackbone / FusedMLPProjector / LlamaForCausalLM):

- `vision_backbone.featurizer.*` and `vision_backbone.fused_featurizer.*`: timm ViTs. In OpenVLA's
  fused "dinosiglip" backbone the featurizer is DINOv2 and the fused featurizer SigLIP (config.json:
  timm_model_ids = [vit_large_patch14_reg4_dinov2.lvd142m, vit_so400m_patch14_siglip_224]) and
  their patch features are concatenated in that order, [DINOv2, SigLIP]; our model concatenates
  [SigLIP, DINOv2], so projector.fc1's input columns are swapped on import. `tower_order` says
  which tower each prefix holds (a single-tower checkpoint has only `featurizer`).
  Per tower: patch_embed.proj.weight [W, 3, p, p] -> kernel.transpose(2, 3, 1, 0) reshaped to
  [p*p*3, W] (our patches are (row, col, channel)-ordered); pos_embed [1, N, W] (patches only: SigLIP
  has no class token, DINOv2-reg4 puts no position embedding on its prefix tokens);
  DINOv2's cls_token [1, 1, W] and reg_token [1, R, W] -> prefix_tokens [1 + R, W];
  blocks.i.{norm1, attn.qkv (fused [3W, W]: q, k, v rows), attn.proj, norm2, mlp.fc1, mlp.fc2} and
  DINOv2's blocks.i.ls{1,2}.scale_factor (OpenVLA renames timm's `gamma`, which HF would overwrite;
  `gamma` is accepted too).
- `projector.fc{1,2,3}`: Linear layers, weight [out, in] -> kernel [in, out].
- `language_model.model.embed_tokens.weight` [V', W], `...layers.i.self_attn.{q,k,v,o}_proj.weight`,
  `...mlp.{gate,up,down}_proj.weight`, `...input_layernorm.weight`, `...post_attention_layernorm
  .weight`, `language_model.model.norm.weight`, `language_model.lm_head.weight` [V', W]. HF stores
  q/k already in the rotate-half RoPE layout our decoder uses, so no head permutation is needed;
  GQA groups match HF's repeat_kv (kv head j serves query heads j*g .. j*g+g-1).
- `proprio_projector.fc{1,2}` only when model.use_proprio (OFT saves its ProprioProjector in a
  separate torch file; merge it into the dict under these names).

Vocabulary: OpenVLA pads Llama-2's 32000-token vocabulary (plus its <PAD> id 32000) to V' = 32064
rows for the embedding and the LM head. Our model.vocab_size is 32000 and the action head is the
LM head's LAST model.num_bins columns, i.e. ids 31744..31999 for 32000 and 256: exactly OpenVLA's
action tokens (ActionTokenizer: id = 32000 - bin index). So rows [model.vocab_size:] are dropped
(the <PAD> row and the 63 padding rows, never predicted by an action position); a checkpoint with
fewer rows than model.vocab_size is an error.

Dropped on purpose (documented, never an error when present): each tower's LAST block
(`blocks.{depth}.*`: OpenVLA reads the second-to-last block's output, and model.<tower>.depth counts
the blocks run; the checkpoint must hold exactly depth + 1 blocks), each tower's final `norm.*` and
`fc_norm.*` (OpenVLA's get_intermediate_layers does not apply them), SigLIP's attention-pool head
`attn_pool.*` (unused by OpenVLA), and Llama's `rotary_emb.inv_freq` buffers (recomputed from
model.rope_theta).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from vla_rl_jax.config import ModelConfig

LLM = "language_model.model"
VB = "vision_backbone"
DEFAULT_TOWER_ORDER = ("dinov2", "siglip")  # (featurizer, fused_featurizer) in OpenVLA


class CheckpointImportError(ValueError):
  """An OpenVLA-OFT checkpoint does not fit model's shapes or names (the message names the key)."""


# ------------------------------------------------------------------------------------------------
# The expected source keys and their shapes


def _prefixes(cfg: ModelConfig, tower_order) -> dict[str, str]:
  """{tower kind: source prefix} for the towers that are on."""
  on = [t for t in tower_order if getattr(cfg, t).depth > 0]
  names = ["featurizer", "fused_featurizer"]
  if set(on) != {t for t in ("siglip", "dinov2") if getattr(cfg, t).depth > 0}:
    raise CheckpointImportError(f"tower_order={tower_order!r} must name every tower that is on")
  return {t: f"{VB}.{names[i]}" for i, t in enumerate(on)}


def _vit_shapes(kind: str, cfg: ModelConfig, n_patches: int) -> dict[str, tuple]:
  t, p = getattr(cfg, kind), cfg.patch_size
  w, m = t.width, t.mlp_dim
  out = {"patch_embed.proj.weight": (w, 3, p, p), "patch_embed.proj.bias": (w,),
         "pos_embed": (1, n_patches, w)}
  if kind == "dinov2":
    out["cls_token"] = (1, 1, w)
    if t.num_registers:
      out["reg_token"] = (1, t.num_registers, w)
  for i in range(t.depth + 1):  # + the last block, dropped
    b = f"blocks.{i}."
    out.update({b + "norm1.weight": (w,), b + "norm1.bias": (w,),
                b + "attn.qkv.weight": (3 * w, w), b + "attn.qkv.bias": (3 * w,),
                b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                b + "norm2.weight": (w,), b + "norm2.bias": (w,),
                b + "mlp.fc1.weight": (m, w), b + "mlp.fc1.bias": (m,),
                b + "mlp.fc2.weight": (w, m), b + "mlp.fc2.bias": (w,)})
    if kind == "dinov2":
      out[b + "ls1.scale_factor"] = (w,)
      out[b + "ls2.scale_factor"] = (w,)
  return out


def expected_shapes(cfg: ModelConfig, image_size: int, src_vocab: int | None = None,
                    proprio_size: int = 0, tower_order=DEFAULT_TOWER_ORDER) -> dict[str, tuple]:
  """{source key: shape} that a checkpoint for cfg must hold (the dropped last tower blocks
  included; the optional dropped keys are not). src_vocab: the checkpoint's embedding rows
  (default cfg.vocab_size)."""
  n = (image_size // cfg.patch_size) ** 2
  out: dict[str, tuple] = {}
  for kind, pre in _prefixes(cfg, tower_order).items():
    out.update({f"{pre}.{k}": s for k, s in _vit_shapes(kind, cfg, n).items()})
  v = sum(getattr(cfg, t).width for t in ("siglip", "dinov2") if getattr(cfg, t).depth)
  w, hd = cfg.width, cfg.width // cfg.num_heads
  kv = cfg.num_kv_heads or cfg.num_heads
  for name, (i, o) in (("fc1", (v, 4 * v)), ("fc2", (4 * v, w)), ("fc3", (w, w))):
    out[f"projector.{name}.weight"], out[f"projector.{name}.bias"] = (o, i), (o,)
  if cfg.use_proprio:
    for name, (i, o) in (("fc1", (proprio_size, w)), ("fc2", (w, w))):
      out[f"proprio_projector.{name}.weight"], out[f"proprio_projector.{name}.bias"] = (o, i), (o,)
  sv = src_vocab or cfg.vocab_size
  out[f"{LLM}.embed_tokens.weight"] = (sv, w)
  out[f"{LLM}.norm.weight"] = (w,)
  out["language_model.lm_head.weight"] = (sv, w)
  for i in range(cfg.depth):
    b = f"{LLM}.layers.{i}."
    out.update({b + "self_attn.q_proj.weight": (cfg.num_heads * hd, w),
                b + "self_attn.k_proj.weight": (kv * hd, w),
                b + "self_attn.v_proj.weight": (kv * hd, w),
                b + "self_attn.o_proj.weight": (w, cfg.num_heads * hd),
                b + "mlp.gate_proj.weight": (cfg.mlp_dim, w), b + "mlp.up_proj.weight": (cfg.mlp_dim, w),
                b + "mlp.down_proj.weight": (w, cfg.mlp_dim),
                b + "input_layernorm.weight": (w,), b + "post_attention_layernorm.weight": (w,)})
  return out


_OPTIONAL_DROPS = (
    re.compile(rf"{VB}\.(featurizer|fused_featurizer)\.(norm|fc_norm)\.(weight|bias)$"),
    re.compile(rf"{VB}\.(featurizer|fused_featurizer)\.attn_pool\..+$"),
    re.compile(rf"{LLM}\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$"),
)


def dropped(key: str) -> bool:
  """Keys the importer drops when present (see the module docstring)."""
  return any(r.match(key) for r in _OPTIONAL_DROPS)


def _normalise(flat: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """timm's LayerScale name `gamma` -> OpenVLA's `scale_factor` (both occur in the wild)."""
  out = {}
  for k, a in flat.items():
    k2 = re.sub(r"\.ls([12])\.gamma$", r".ls\1.scale_factor", k)
    if k2 in out:
      raise CheckpointImportError(f"both {k} and its OpenVLA name {k2} are present")
    out[k2] = np.asarray(a)
  return out


def check(flat: Mapping[str, Any], cfg: ModelConfig, image_size: int, proprio_size: int = 0,
          tower_order=DEFAULT_TOWER_ORDER) -> dict[str, np.ndarray]:
  """The checkpoint's arrays (LayerScale names normalised) after checking every key and shape;
  CheckpointImportError names the first missing / unexpected / wrongly shaped key."""
  flat = _normalise(flat)
  emb = f"{LLM}.embed_tokens.weight"
  src_vocab = flat[emb].shape[0] if emb in flat and flat[emb].ndim == 2 else None
  if src_vocab is not None and src_vocab < cfg.vocab_size:
    raise CheckpointImportError(
        f"{emb}: {src_vocab} rows, fewer than model.vocab_size={cfg.vocab_size}: the action bins "
        f"must be ids {cfg.vocab_size - cfg.num_bins}..{cfg.vocab_size - 1} of the checkpoint's "
        f"vocabulary (set model.vocab_size to the tokenizer's real vocabulary size)")
  want = expected_shapes(cfg, image_size, src_vocab, proprio_size, tower_order)
  missing = sorted(k for k in want if k not in flat)
  if missing:
    more = f" (and {len(missing) - 1} more: {', '.join(missing[1:4])}...)" if len(missing) > 1 else ""
    raise CheckpointImportError(
        f"missing key {missing[0]} (expected shape {list(want[missing[0]])}){more}; the config's "
        f"shapes decide which keys must be present (towers hold model.<tower>.depth + 1 blocks, "
        f"the decoder model.depth layers)")
  extra = sorted(k for k in flat if k not in want and not dropped(k))
  if extra:
    more = f" (and {len(extra) - 1} more: {', '.join(extra[1:4])}...)" if len(extra) > 1 else ""
    raise CheckpointImportError(
        f"unexpected key {extra[0]} (shape {list(flat[extra[0]].shape)}){more}: not part of the "
        f"model this config describes (a deeper tower or decoder, proprio without "
        f"model.use_proprio, or a different architecture)")
  for k, shape in want.items():
    if tuple(flat[k].shape) != tuple(shape):
      raise CheckpointImportError(f"{k}: expected shape {list(shape)}, found "
                                  f"{list(flat[k].shape)}")
  return flat


# ------------------------------------------------------------------------------------------------
# The mapping, both ways


def _linear(w, b=None):
  """torch Linear (weight [out, in], bias [out]) -> flax Dense {kernel [in, out], bias}."""
  out = {"kernel": w.T}
  if b is not None:
    out["bias"] = b
  return out


def _vit_block(g, w: int, heads: int, layer_scale: bool) -> dict:
  hd = w // heads
  qkv_w, qkv_b = g("attn.qkv.weight"), g("attn.qkv.bias")
  attn = {}
  for j, name in enumerate(("query", "key", "value")):
    attn[name] = {"kernel": qkv_w[j * w:(j + 1) * w].T.reshape(w, heads, hd),
                  "bias": qkv_b[j * w:(j + 1) * w].reshape(heads, hd)}
  attn["out"] = {"kernel": g("attn.proj.weight").T.reshape(heads, hd, w),
                 "bias": g("attn.proj.bias")}
  out = {"ln1": {"scale": g("norm1.weight"), "bias": g("norm1.bias")}, "attn": attn,
         "ln2": {"scale": g("norm2.weight"), "bias": g("norm2.bias")},
         "mlp_in": _linear(g("mlp.fc1.weight"), g("mlp.fc1.bias")),
         "mlp_out": _linear(g("mlp.fc2.weight"), g("mlp.fc2.bias"))}
  if layer_scale:
    out["ls1"], out["ls2"] = g("ls1.scale_factor"), g("ls2.scale_factor")
  return out


def _layers(blocks: list[dict], scan: bool) -> dict:
  """Per-block trees -> {"layers": stacked on a leading axis} (nn.scan) or {"layers_i": tree}."""
  if scan:
    return {"layers": jax.tree_util.tree_map(lambda *xs: np.stack(xs), *blocks)}
  return {f"layers_{i}": b for i, b in enumerate(blocks)}


def import_params(flat: Mapping[str, Any], cfg: ModelConfig, image_size: int,
                  proprio_size: int = 0, tower_order=DEFAULT_TOWER_ORDER,
                  dtype=np.float32) -> dict:
  """Flat OpenVLA-OFT checkpoint {name: array} -> our "oft" parameter tree (numpy, `dtype`), as
  OFTVLA(cfg).init would lay it out (stacked "layers" when cfg.scan_layers).

  image_size: env.image_size (sets pos_embed's rows); proprio_size: obs.proprio's length (only with
  cfg.use_proprio); tower_order: the tower kinds of (featurizer, fused_featurizer).
  Raises CheckpointImportError naming the key for any missing, unexpected or misshapen array."""
  flat = check(flat, cfg, image_size, proprio_size, tower_order)
  cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
  p = cfg.patch_size
  out: dict[str, Any] = {}
  prefixes = _prefixes(cfg, tower_order)
  for kind, pre in prefixes.items():
    t = getattr(cfg, kind)
    g = lambda k, pre=pre: flat[f"{pre}.{k}"]  # noqa: E731
    tree = {"patch_embed": {"kernel": g("patch_embed.proj.weight").transpose(2, 3, 1, 0).reshape(
                p * p * 3, t.width), "bias": g("patch_embed.proj.bias")},
            "pos_embed": g("pos_embed")[0]}
    if kind == "dinov2":
      toks = [g("cls_token")[0]] + ([g("reg_token")[0]] if t.num_registers else [])
      tree["prefix_tokens"] = np.concatenate(toks, axis=0)
    blocks = [_vit_block(lambda k, i=i, g=g: g(f"blocks.{i}.{k}"), t.width, t.num_heads,
                         kind == "dinov2") for i in range(t.depth)]   # the last block is dropped
    tree.update(_layers(blocks, cfg.scan_layers))
    out[kind] = tree

  # projector.fc1's input columns follow the checkpoint's tower order; ours is (siglip, dinov2)
  fc1 = flat["projector.fc1.weight"]
  cols, start = {}, 0
  for kind in prefixes:
    width = getattr(cfg, kind).width
    cols[kind] = fc1[:, start:start + width]
    start += width
  fc1 = np.concatenate([cols[k] for k in ("siglip", "dinov2") if k in cols], axis=1)
  out["projector_fc1"] = _linear(fc1, flat["projector.fc1.bias"])
  for i in (2, 3):
    out[f"projector_fc{i}"] = _linear(flat[f"projector.fc{i}.weight"], flat[f"projector.fc{i}.bias"])
  if cfg.use_proprio:
    for i in (1, 2):
      out[f"proprio_fc{i}"] = _linear(flat[f"proprio_projector.fc{i}.weight"],
                                      flat[f"proprio_projector.fc{i}.bias"])

  v, w, h = cfg.vocab_size, cfg.width, cfg.num_heads
  hd, kv = w // h, cfg.num_kv_heads or h
  out["tok_embed"] = {"embedding": flat[f"{LLM}.embed_tokens.weight"][:v]}
  out["lm_head"] = flat["language_model.lm_head.weight"][:v].T
  out["final_norm"] = {"scale": flat[f"{LLM}.norm.weight"]}
  blocks = []
  for i in range(cfg.depth):
    g = lambda k, i=i: flat[f"{LLM}.layers.{i}.{k}"]  # noqa: E731
    blocks.append({
        "attn_norm": {"scale": g("input_layernorm.weight")},
        "mlp_norm": {"scale": g("post_attention_layernorm.weight")},
        "attn": {"query": {"kernel": g("self_attn.q_proj.weight").T.reshape(w, h, hd)},
                 "key": {"kernel": g("self_attn.k_proj.weight").T.reshape(w, kv, hd)},
                 "value": {"kernel": g("self_attn.v_proj.weight").T.reshape(w, kv, hd)},
                 "out": {"kernel": g("self_attn.o_proj.weight").T.reshape(h, hd, w)}},
        "gate": _linear(g("mlp.gate_proj.weight")), "up": _linear(g("mlp.up_proj.weight")),
        "down": _linear(g("mlp.down_proj.weight"))})
  out.update(_layers(blocks, cfg.scan_layers))
  return jax.tree_util.tree_map(cast, out)


def export_params(params: Mapping[str, Any], cfg: ModelConfig, src_vocab: int | None = None,
                  tower_order=DEFAULT_TOWER_ORDER, last_blocks: bool = True,
                  rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
  """The inverse of import_params: our parameter tree -> a flat OpenVLA-OFT-named dict.

  src_vocab pads the embedding and LM head to that many rows (OpenVLA's 32064); last_blocks adds
  each tower's dropped last block (random values from rng, which import must ignore)."""
  rng = rng or np.random.default_rng(0)
  params = jax.tree_util.tree_map(np.asarray, params)

  def layer(tree, i):
    if cfg.scan_layers:
      return jax.tree_util.tree_map(lambda a: a[i], tree["layers"])
    return tree[f"layers_{i}"]

  out: dict[str, np.ndarray] = {}
  prefixes = _prefixes(cfg, tower_order)
  for kind, pre in prefixes.items():
    t, tree, p = getattr(cfg, kind), params[kind], cfg.patch_size
    out[f"{pre}.patch_embed.proj.weight"] = tree["patch_embed"]["kernel"].reshape(
        p, p, 3, t.width).transpose(3, 2, 0, 1)
    out[f"{pre}.patch_embed.proj.bias"] = tree["patch_embed"]["bias"]
    out[f"{pre}.pos_embed"] = tree["pos_embed"][None]
    if kind == "dinov2":
      out[f"{pre}.cls_token"] = tree["prefix_tokens"][None, :1]
      if t.num_registers:
        out[f"{pre}.reg_token"] = tree["prefix_tokens"][None, 1:]
    for i in range(t.depth + int(last_blocks)):
      if i < t.depth:
        blk = layer(tree, i)
      else:  # the dropped block: any values
        blk = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                                     layer(tree, 0))
      b, a = f"{pre}.blocks.{i}.", blk["attn"]
      out[b + "attn.qkv.weight"] = np.concatenate(
          [a[n]["kernel"].reshape(t.width, t.width).T for n in ("query", "key", "value")])
      out[b + "attn.qkv.bias"] = np.concatenate([a[n]["bias"].reshape(-1)
                                                 for n in ("query", "key", "value")])
      out[b + "attn.proj.weight"] = a["out"]["kernel"].reshape(t.width, t.width).T
      out[b + "attn.proj.bias"] = a["out"]["bias"]
      for src, dst in (("norm1", "ln1"), ("norm2", "ln2")):
        out[b + f"{src}.weight"], out[b + f"{src}.bias"] = blk[dst]["scale"], blk[dst]["bias"]
      for src, dst in (("fc1", "mlp_in"), ("fc2", "mlp_out")):
        out[b + f"mlp.{src}.weight"] = blk[dst]["kernel"].T
        out[b + f"mlp.{src}.bias"] = blk[dst]["bias"]
      if kind == "dinov2":
        out[b + "ls1.scale_factor"], out[b + "ls2.scale_factor"] = blk["ls1"], blk["ls2"]

  k1 = params["projector_fc1"]["kernel"]      # rows (siglip, dinov2) -> the checkpoint's order
  rows, start = {}, 0
  for kind in ("siglip", "dinov2"):
    if kind in prefixes:
      width = getattr(cfg, kind).width
      rows[kind] = k1[start:start + width]
      start += width
  out["projector.fc1.weight"] = np.concatenate([rows[k] for k in prefixes], axis=0).T
  out["projector.fc1.bias"] = params["projector_fc1"]["bias"]
  for i in (2, 3):
    out[f"projector.fc{i}.weight"] = params[f"projector_fc{i}"]["kernel"].T
    out[f"projector.fc{i}.bias"] = params[f"projector_fc{i}"]["bias"]
  if cfg.use_proprio:
    for i in (1, 2):
      out[f"proprio_projector.fc{i}.weight"] = params[f"proprio_fc{i}"]["kernel"].T
      out[f"proprio_projector.fc{i}.bias"] = params[f"proprio_fc{i}"]["bias"]

  v, w = cfg.vocab_size, cfg.width
  sv = src_vocab or v
  pad = lambda a: np.concatenate([a, rng.normal(size=(sv - v, w)).astype(a.dtype)])  # noqa: E731
  out[f"{LLM}.embed_tokens.weight"] = pad(params["tok_embed"]["embedding"])
  out["language_model.lm_head.weight"] = pad(params["lm_head"].T)
  out[f"{LLM}.norm.weight"] = params["final_norm"]["scale"]
  for i in range(cfg.depth):
    blk, b = layer(params, i), f"{LLM}.layers.{i}."
    a = blk["attn"]
    out[b + "self_attn.q_proj.weight"] = a["query"]["kernel"].reshape(w, -1).T
    out[b + "self_attn.k_proj.weight"] = a["key"]["kernel"].reshape(w, -1).T
    out[b + "self_attn.v_proj.weight"] = a["value"]["kernel"].reshape(w, -1).T
    out[b + "self_attn.o_proj.weight"] = a["out"]["kernel"].reshape(-1, w).T
    for n in ("gate", "up", "down"):
      out[b + f"mlp.{n}_proj.weight"] = blk[n]["kernel"].T
    out[b + "input_layernorm.weight"] = blk["attn_norm"]["scale"]
    out[b + "post_attention_layernorm.weight"] = blk["mlp_norm"]["scale"]
  return {k: np.ascontiguousarray(a) for k, a in out.items()}
