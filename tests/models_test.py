"""The "oft" model (models/oft.py): output contract, OFT's attention pattern, scan / remat / bf16
equivalences, the same outputs and gradients on 1 and 8 devices, parameter counts, config checks.

Tiny dims throughout (decoder 32 wide, 2 layers; towers 16 wide; 32x32 images, patch 8), every
forward under jit.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax import sharding
from vla_rl_jax.config import ConfigError, MeshConfig
from vla_rl_jax.models import oft, tokenizer
from vla_rl_jax.types import PolicyObs

B, N_ACT, IMG = 8, 8, 32


def tiny_oft_dict(**model):
  """configs/default.py's tiny config switched to a tiny oft model (both towers, GQA, proprio)."""
  c = get_config("variant=tiny")
  m = c.model
  m.name, m.ordinal_head = "oft", False
  m.width, m.depth, m.num_heads, m.num_kv_heads, m.mlp_dim = 32, 2, 4, 2, 64
  m.siglip.update(dict(width=16, depth=2, num_heads=2, mlp_dim=32))
  m.dinov2.update(dict(width=16, depth=2, num_heads=2, mlp_dim=32, num_registers=2))
  m.use_proprio = True
  for k, v in model.items():
    setattr(m, k, v)
  return c


def tiny_cfg(**model):
  return config_lib.resolve(tiny_oft_dict(**model), 8)


def make_obs(seed=0, batch=B, max_len=32):
  rng = np.random.default_rng(seed)
  texts = ["pick up the bowl", "open the drawer", "go", "push the plate"]
  text = tokenizer.encode_all([texts[i % len(texts)] for i in range(batch)], max_len)
  return PolicyObs(image=jnp.asarray(rng.integers(0, 256, (batch, IMG, IMG, 3)), jnp.uint8),
                   text=jnp.asarray(text), proprio=jnp.asarray(rng.normal(size=(batch, 2)),
                                                            jnp.float32))


def model_of(cfg, mesh=None):
  return oft.OFTVLA(cfg.model, num_action_tokens=N_ACT, mesh=mesh)


def init(model, obs):
  return nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), obs)["params"])


def loss_fn(model):
  """A scalar that weighs every logit: the mean log-prob of fixed bins; the logits as aux."""
  def f(params, obs):
    logits = model.apply({"params": params}, obs)
    target = (jnp.arange(logits.shape[0])[:, None] * 7 + jnp.arange(logits.shape[1])) % 256
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, target[..., None], -1).mean(), logits
  return f


def value_grad(model, **jit_kw):
  """jitted (params, obs) -> ((loss, logits), grads): one compile for outputs and gradients."""
  return jax.jit(jax.value_and_grad(loss_fn(model), has_aux=True), **jit_kw)


@pytest.fixture(scope="module")
def base():
  cfg = tiny_cfg()
  model = model_of(cfg)
  obs = make_obs()
  params = init(model, obs)
  fwd = jax.jit(lambda p, o, a=None: model.apply({"params": p}, o, a, return_hidden=True))
  return cfg, model, obs, params, fwd


@pytest.fixture(scope="module")
def ref(base):
  """The 1-device fp32 reference: ((loss, logits), grads)."""
  _, model, obs, params, _ = base
  return jax.device_get(value_grad(model)(params, obs))


def assert_same(got, want, rtol, atol):
  (gl, glog), gg = got
  (wl, wlog), wg = want
  np.testing.assert_allclose(float(gl), float(wl), rtol=rtol)
  np.testing.assert_allclose(np.asarray(glog), np.asarray(wlog), rtol=rtol, atol=atol)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol),
      gg, wg)


def test_output_contract_and_fp32_master_weights(base):
  cfg, model, obs, params, fwd = base
  logits, hidden = fwd(params, obs)
  lay = model.layout(IMG)
  assert logits.shape == (B, N_ACT, 256) and logits.dtype == jnp.float32
  assert hidden.shape == (B, lay["length"], cfg.model.width)
  assert lay == {"patches": 1, "text": 1 + 16 + 1, "actions": 18 + 31, "length": 49 + N_ACT}
  assert np.isfinite(np.asarray(logits)).all()
  assert params["lm_head"].shape == (32, cfg.model.vocab_size)   # the full LM head, sliced in use
  assert params["layers"]["attn"]["key"]["kernel"].shape == (2, 32, 2, 8)   # scanned, GQA
  # the head is the LM head's last 256 columns: zeroing the others changes nothing
  p2 = dict(params, lm_head=params["lm_head"].at[:, :-256].set(0.0))
  np.testing.assert_array_equal(np.asarray(fwd(p2, obs)[0]), np.asarray(logits))
  p3 = dict(params, lm_head=params["lm_head"].at[:, -1].add(1.0))
  assert not np.allclose(np.asarray(fwd(p3, obs)[0])[..., -1], np.asarray(logits)[..., -1])


def test_prefix_is_causal(base):
  """Changing text token t changes no hidden state before its position, and does change its own
  position, every later prefix position and every action logit."""
  _, model, obs, params, fwd = base
  lay = model.layout(IMG)
  t = 6                                          # a byte of the instruction (row 0: 16 bytes)
  text2 = obs.text.at[:, t].set(obs.text[:, t] + 1)
  (l1, h1), (l2, h2) = fwd(params, obs), fwd(params, obs.replace(text=text2))
  pos = lay["text"] + t - 1
  h1, h2 = np.asarray(h1), np.asarray(h2)
  np.testing.assert_array_equal(h1[:, :pos], h2[:, :pos])
  assert (np.abs(h1[:, pos:pos + 3] - h2[:, pos:pos + 3]).max(-1) > 1e-4).all()
  assert (np.abs(np.asarray(l1) - np.asarray(l2)).max(-1) > 1e-5).all()
  # the image (patches come right after BOS) reaches every later position too
  img2 = obs.image.at[:, :8, :8].set(255 - obs.image[:, :8, :8])
  l3, h3 = fwd(params, obs.replace(image=img2))
  np.testing.assert_array_equal(np.asarray(h3)[:, 0], h1[:, 0])   # BOS sees only itself
  assert (np.abs(np.asarray(l3) - np.asarray(l1)).max(-1) > 1e-5).all()


def test_padding_is_invisible(base):
  """The same instruction padded to 32 or to 20 tokens gives the same action logits (padding is
  masked and RoPE positions count valid tokens), and the pad embedding row does not matter."""
  cfg, model, obs, params, fwd = base
  logits = np.asarray(fwd(params, obs)[0])
  short_cfg = dataclasses.replace(cfg.model, max_text_len=20)
  short = oft.OFTVLA(short_cfg, num_action_tokens=N_ACT)
  obs20 = make_obs(max_len=20)
  np.testing.assert_array_equal(np.asarray(obs20.text), np.asarray(obs.text)[:, :20])
  l20 = jax.jit(lambda p, o: short.apply({"params": p}, o))(params, obs20)
  np.testing.assert_allclose(np.asarray(l20), logits, rtol=1e-5, atol=1e-5)
  emb = params["tok_embed"]["embedding"]
  p2 = dict(params, tok_embed={"embedding": emb.at[tokenizer.PAD].set(5.0)})
  np.testing.assert_array_equal(np.asarray(fwd(p2, obs)[0]), logits)
  # ...while the same change to a real byte's row does change them
  p3 = dict(params, tok_embed={"embedding": emb.at[3 + ord("p")].set(5.0)})
  assert not np.allclose(np.asarray(fwd(p3, obs)[0]), logits)


def test_action_positions_see_each_other_not_the_prefix_them(base):
  """Perturbing the LAST action position's input changes the FIRST action position's logits
  (bidirectional among actions; a causal mask would not) and leaves every prefix state alone."""
  cfg, model, obs, params, fwd = base
  lay = model.layout(IMG)
  zeros = jnp.zeros((B, N_ACT, cfg.model.width))
  l0, h0 = fwd(params, obs)
  lz, hz = fwd(params, obs, zeros)
  np.testing.assert_array_equal(np.asarray(lz), np.asarray(l0))       # zero = OFT's empty embedding
  bumped = zeros.at[:, -1].set(jax.random.normal(jax.random.PRNGKey(1), (B, cfg.model.width)))
  l1, h1 = fwd(params, obs, bumped)
  np.testing.assert_array_equal(np.asarray(h1)[:, :lay["actions"]],
                                np.asarray(h0)[:, :lay["actions"]])
  assert (np.abs(np.asarray(l1)[:, 0] - np.asarray(l0)[:, 0]).max(-1) > 1e-5).all()


def test_rope_depends_on_relative_position_only():
  """<rope(q, m), rope(k, n)> depends on m - n only, and rope at position 0 is the identity."""
  rng = np.random.default_rng(0)
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32) for _ in range(2))
  def dot(m, n):
    cq, sq = oft.rope(jnp.array([[m]]), 16, 10000.0)
    ck, sk = oft.rope(jnp.array([[n]]), 16, 10000.0)
    return float(jnp.sum(oft._apply_rope(q, cq, sq) * oft._apply_rope(k, ck, sk)))
  assert dot(7, 3) == pytest.approx(dot(107, 103), rel=1e-4)
  assert dot(7, 3) != pytest.approx(dot(7, 4), rel=1e-3)
  c0, s0 = oft.rope(jnp.zeros((1, 1), jnp.int32), 16, 10000.0)
  np.testing.assert_allclose(np.asarray(oft._apply_rope(q, c0, s0)), np.asarray(q))
  # HF Llama's rotate-half layout, by hand for dimension pair (0, 8) at position 5
  c5, s5 = oft.rope(jnp.array([[5]]), 16, 10000.0)
  r = np.asarray(oft._apply_rope(q, c5, s5))[0, 0, 0]
  qq = np.asarray(q)[0, 0, 0]
  np.testing.assert_allclose(r[0], qq[0] * np.cos(5.0) - qq[8] * np.sin(5.0), rtol=1e-5)
  np.testing.assert_allclose(r[8], qq[8] * np.cos(5.0) + qq[0] * np.sin(5.0), rtol=1e-5)


def _unstack(tree):
  """Scanned params ({"layers": stacked}) -> the loop's ({"layers_0": ..., "layers_1": ...})."""
  out = {}
  for k, v in tree.items():
    if k == "layers":
      n = jax.tree_util.tree_leaves(v)[0].shape[0]
      out.update({f"layers_{i}": jax.tree_util.tree_map(lambda x: x[i], v) for i in range(n)})
    elif isinstance(v, dict):
      out[k] = _unstack(v)
    else:
      out[k] = v
  return out


def test_scan_and_loop_compute_the_same(base):
  cfg, model, obs, params, fwd = base
  loop_cfg = dataclasses.replace(cfg.model, scan_layers=False)
  loop = oft.OFTVLA(loop_cfg, num_action_tokens=N_ACT)
  loop_params = _unstack(params)
  expected = jax.tree_util.tree_structure(nn.meta.unbox(jax.eval_shape(
      lambda: loop.init(jax.random.PRNGKey(0), obs)["params"])))
  assert jax.tree_util.tree_structure(loop_params) == expected
  out = jax.jit(lambda p, o: loop.apply({"params": p}, o))(loop_params, obs)
  np.testing.assert_allclose(np.asarray(out), np.asarray(fwd(params, obs)[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["full", pytest.param("dots", marks=pytest.mark.slow),
                                    "dots_no_batch"])
def test_remat_policies_give_the_same_outputs_and_gradients(base, ref, policy):
  """fp32: recomputing the forward in the backward pass changes nothing beyond rounding (XLA fuses
  the recomputation differently): rtol 1e-5, atol 1e-7. ("dots" is marked slow: one more compile.)"""
  cfg, _, obs, params, _ = base
  m = oft.OFTVLA(dataclasses.replace(cfg.model, remat=policy), num_action_tokens=N_ACT)
  assert_same(jax.device_get(value_grad(m)(params, obs)), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(8, 1, 1), (1, 8, 1), (1, 4, 2)],
                         ids=["data8", "fsdp8", "fsdp4xtensor2"])
def test_same_outputs_and_gradients_on_1_and_8_devices(base, ref, shape):
  """fp32; tolerance rtol 1e-4, atol 1e-7 on loss, logits and gradients: shards reorder the sums."""
  cfg, _, obs, params, _ = base
  mesh = sharding.make_mesh(MeshConfig(*shape))
  sharded = model_of(cfg, mesh)           # with the mesh: activation sharding constraints on
  boxed = jax.eval_shape(lambda: sharded.init(jax.random.PRNGKey(0), obs)["params"])
  p_sh = sharding.param_shardings(boxed, mesh)
  obs_sh = jax.tree_util.tree_map(lambda _: sharding.batch(mesh), obs)
  step = value_grad(sharded, in_shardings=(p_sh, obs_sh))
  p_dev, o_dev = jax.device_put(params, p_sh), jax.device_put(obs, obs_sh)
  got = step(p_dev, o_dev)
  # the parameters really are split the way the rules say
  q = p_dev["layers"]["attn"]["query"]["kernel"]             # [layers, embed, heads, kv]
  assert q.addressable_shards[0].data.shape == (2, 32 // shape[1], 4 // shape[2], 8)
  up = p_dev["layers"]["up"]["kernel"]                       # [layers, embed, mlp]
  assert up.addressable_shards[0].data.shape == (2, 32 // shape[1], 64 // shape[2])
  assert_same(jax.device_get(got), ref, rtol=1e-4, atol=1e-7)
  # scanned ("layers"-prefixed) specs go through the fallback list too: only the 515-id vocabulary
  # fails to split over tensor=2
  fallbacks = sharding.replication_fallbacks(boxed, mesh)
  want = {("lm_head", "vocab"), ("tok_embed/embedding", "vocab")} if shape[2] > 1 else set()
  assert {(f.path, f.logical_axis) for f in fallbacks} == want


def test_bf16_compute_is_close_to_fp32_and_params_stay_fp32(base, ref):
  cfg, _, obs, params, _ = base
  bf = oft.OFTVLA(dataclasses.replace(cfg.model, dtype="bfloat16"), num_action_tokens=N_ACT)
  abstract = jax.eval_shape(lambda: nn.meta.unbox(bf.init(jax.random.PRNGKey(0), obs)["params"]))
  assert {x.dtype for x in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype(jnp.float32)}
  logits16 = jax.jit(lambda p, o: bf.apply({"params": p}, o))(params, obs)
  assert logits16.dtype == jnp.float32
  grads = jax.eval_shape(jax.grad(lambda p, o: loss_fn(bf)(p, o)[0]), params, obs)
  assert {x.dtype for x in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}
  logits32 = np.asarray(ref[0][1])
  err = np.abs(np.asarray(logits16) - logits32).max()
  spread = np.abs(logits32).max()
  assert err < 0.05 * spread, (err, spread)   # bf16 keeps ~3 significant digits per op
  assert err > 0                               # (and it did compute in bf16)


def _vit(w, m, layer_scale):
  """One pre-LN ViT block by hand: qkv+out with biases, two LayerNorms, the MLP, LayerScale."""
  return 4 * (w * w + w) + 2 * 2 * w + (w * m + m) + (m * w + w) + (2 * w if layer_scale else 0)


def test_param_count_of_7b_matches_the_published_shapes():
  """By hand from OpenVLA-OFT's shapes (224x224, patch 14: 256 patches), independent of the code."""
  cfg = config_lib.resolve(get_config("variant=7b"), 8)
  got = oft.param_count(cfg)
  patch = 14 * 14 * 3
  siglip = patch * 1152 + 1152 + 256 * 1152 + 26 * _vit(1152, 4304, False)
  dinov2 = patch * 1024 + 1024 + 256 * 1024 + 5 * 1024 + 23 * _vit(1024, 4096, True)
  v = 1152 + 1024
  projector = v * 4 * v + 4 * v + 4 * v * 4096 + 4096 + 4096 * 4096 + 4096
  llama2_7b = 6_738_415_616             # Llama-2-7B's published parameter count (HF config shapes)
  hand = siglip + dinov2 + projector + llama2_7b
  assert abs(got["total"] - hand) / hand < 0.01, (got, hand)
  assert got["embed"] + got["decoder"] + got["head"] == llama2_7b
  assert (got["siglip"], got["dinov2"], got["projector"]) == (siglip, dinov2, projector)
  # SigLIP-So400m is 428M with its 27th block and pooling head, DINOv2-L/14 304M with its 24th
  # block: what runs is one block less of each
  assert got["siglip"] + _vit(1152, 4304, False) == pytest.approx(413e6, rel=0.01)  # + head 15M
  assert got["dinov2"] + _vit(1024, 4096, True) == pytest.approx(304e6, rel=0.01)
  assert got["total"] == pytest.approx(7.5e9, rel=0.01)     # OpenVLA's ~7.5B
  # the 7b forward traces (bf16, remat, scan) and every weight splits on fsdp x tensor meshes with
  # no replication fallback: still shapes only, nothing allocated
  model = oft.OFTVLA(cfg.model, num_action_tokens=8 * 7)
  obs = PolicyObs(image=jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.uint8),
                  text=jax.ShapeDtypeStruct((2, cfg.model.max_text_len), jnp.int32),
                  proprio=jax.ShapeDtypeStruct((2, 8), jnp.float32))
  boxed = jax.eval_shape(lambda o: model.init(jax.random.PRNGKey(0), o)["params"], obs)
  out = jax.eval_shape(lambda p, o: model.apply({"params": p}, o), nn.meta.unbox(boxed), obs)
  assert (out.shape, out.dtype) == ((2, 56, 256), jnp.float32)
  for shape in ((1, 8, 1), (1, 4, 2), (1, 2, 4)):
    assert sharding.replication_fallbacks(boxed, sharding.make_mesh(MeshConfig(*shape))) == ()


@pytest.mark.parametrize("field,value,match", [
    ("remat", "some", r"model.remat='some': choose one of"),
    ("num_kv_heads", 3, r"model.num_kv_heads=3: must divide model.num_heads=4"),
    ("ordinal_head", True, r"model.ordinal_head=True: must be False for model.name='oft'"),
    ("num_heads", 3, r"model.width=32: must be divisible by model.num_heads=3"),
    ("siglip", dict(width=16, depth=2, num_heads=3, mlp_dim=32),
     r"model.siglip.width=16: must be divisible by model.siglip.num_heads=3"),
    ("siglip", dict(width=16, depth=2, num_heads=2, mlp_dim=32, extra=1),
     r"config.model.siglip.extra: unknown field"),
    ("num_heads", 8, r"model.width=24: width / num_heads = 3 must be even"),
])
def test_config_errors_name_the_field(field, value, match):
  c = tiny_oft_dict()
  if (field, value) == ("num_heads", 8):
    c.model.width, c.model.num_kv_heads = 24, 0   # head dim 3: RoPE needs pairs
  setattr(c.model, field, value)
  with pytest.raises(ConfigError, match=match):
    config_lib.resolve(c, 8)


def test_towers_all_off_and_init_fields():
  c = tiny_oft_dict()
  c.model.siglip.depth = c.model.dinov2.depth = 0
  with pytest.raises(ConfigError, match="at least one vision tower must be on"):
    config_lib.resolve(c, 8)
  # a run saved before the oft fields existed still matches a tiny_vla config (no init conflict);
  # a changed tower does not
  tiny = config_lib.resolve(get_config("variant=tiny"), 8)
  old = config_lib.to_dict(tiny)
  for f in ("siglip", "dinov2", "num_kv_heads", "norm_eps", "rope_theta", "use_proprio",
            "scan_layers", "remat"):
    del old["model"][f]
  assert config_lib.init_conflicts(old, tiny) == []
  assert config_lib.resume_conflicts(old, tiny) == []
  old["model"]["width"] = 48
  assert config_lib.resume_conflicts(old, tiny) == ["model"]
  cfg = tiny_cfg()
  saved = config_lib.to_dict(tiny_cfg(dinov2=dict(width=16, depth=1, num_heads=2, mlp_dim=32,
                                                  num_registers=2)))
  assert [f for f, *_ in config_lib.init_conflicts(saved, cfg)] == ["model.dinov2"]
  assert config_lib.loads(config_lib.dumps(cfg), 8) == cfg
  hash(cfg)


@pytest.mark.slow
def test_fused_train_step_runs_an_oft_model_on_data_fsdp_tensor():
  """builders.build + make_train_step with a tiny oft model on a (2, 2, 2) mesh: one RL step
  compiles, its first ratio is 1 (rollout and update log-probs agree), metrics are finite and the
  parameters keep their fsdp x tensor shardings. (slow: about a minute of compile on 2 cores)"""
  from vla_rl_jax.builders import build
  from vla_rl_jax.train_step import make_train_step
  c = tiny_oft_dict(use_proprio=False, remat="full")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 4, 4, 8
  c.mesh.fsdp, c.mesh.tensor = 2, 2
  b = build(config_lib.resolve(c, 8))
  state, stats = b.init_fn()
  state, stats, m = make_train_step(b)(state, stats)
  m = jax.device_get(m)
  assert all(np.isfinite(v) for v in m.values())
  assert m["first_ratio_dev"] < 1e-5
  q = state.params["layers"]["attn"]["query"]["kernel"]
  assert q.addressable_shards[0].data.shape == (2, 32 // 2, 4 // 2, 8)
  assert int(state.step) == 1


# ---- numpy oracles: the blocks written out the way HF's Llama and timm's ViT compute them --------

def _np_rope(x, pos, theta=10000.0):
  """x [B, S, H, hd]: HF's rotate_half RoPE at positions pos [B, S], in float64."""
  hd = x.shape[-1]
  inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
  ang = pos[..., None] * inv
  cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
  rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
  return x * cos[:, :, None] + rot * sin[:, :, None]


def _np_attention(p, x, heads, kv_heads, mask=None, pos=None):
  """Multi-head attention with HF's repeat_kv grouping (kv head j serves query heads
  j * g .. j * g + g - 1), biases if present, an optional bool mask [B, S, S]."""
  def lin(name):
    y = np.einsum("bsw,whd->bshd", x, p[name]["kernel"])
    return y + p[name]["bias"] if "bias" in p[name] else y
  q, k, v = lin("query"), lin("key"), lin("value")
  if pos is not None:
    q, k = _np_rope(q, pos), _np_rope(k, pos)
  k, v = np.repeat(k, heads // kv_heads, axis=2), np.repeat(v, heads // kv_heads, axis=2)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask[:, None], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", w, v)
  y = np.einsum("bqhd,hdw->bqw", out, p["out"]["kernel"])
  return y + p["out"]["bias"] if "bias" in p["out"] else y


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def test_decoder_block_matches_a_numpy_llama_block(base):
  cfg, *_ = base
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 6, 32)).astype(np.float32)
  mask = np.tril(np.ones((6, 6), bool))[None].repeat(2, 0)
  mask[1, :, 2] = False                                # a padding key in row 1
  pos = np.cumsum(np.arange(6)[None] != np.array([[-1], [2]]), 1) - 1
  block = oft.DecoderBlock(cfg.model)
  cos, sin = oft.rope(jnp.asarray(pos), 8, 10000.0)
  params = nn.meta.unbox(block.init(jax.random.PRNGKey(4), x, mask, cos, sin)["params"])
  params = jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.asarray(  # non-trivial norm scales
      rng.normal(size=a.shape), a.dtype), params)
  got, _ = jax.jit(lambda p: block.apply({"params": p}, x, mask, cos, sin))(params)
  p = _f64(params)

  def rms(h, scale):
    return h / np.sqrt(np.mean(h * h, -1, keepdims=True) + 1e-5) * scale
  x64 = x.astype(np.float64)
  h = x64 + _np_attention(p["attn"], rms(x64, p["attn_norm"]["scale"]), 4, 2, mask, pos)
  u = rms(h, p["mlp_norm"]["scale"])
  g, up = u @ p["gate"]["kernel"], u @ p["up"]["kernel"]
  want = h + (g / (1 + np.exp(-g)) * up) @ p["down"]["kernel"]
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_dinov2_block_matches_a_numpy_timm_block(base):
  from scipy.special import erf
  cfg, *_ = base
  tower = cfg.model.dinov2
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 7, 16)).astype(np.float32)
  block = oft.ViTBlock(tower, layer_scale=True, approximate_gelu=False, dtype=jnp.float32,
                       param_dtype=jnp.float32)
  params = nn.meta.unbox(block.init(jax.random.PRNGKey(6), x)["params"])
  params = jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.asarray(rng.normal(size=a.shape),
                                                                   a.dtype), params)
  got, _ = jax.jit(lambda p: block.apply({"params": p}, x))(params)
  p = _f64(params)

  def ln(h, q):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-6) * q["scale"] + q["bias"]
  x64 = x.astype(np.float64)
  h = x64 + p["ls1"] * _np_attention(p["attn"], ln(x64, p["ln1"]), 2, 2)
  m = ln(h, p["ln2"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
  m = 0.5 * m * (1 + erf(m / np.sqrt(2)))
  want = h + p["ls2"] * (m @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"])
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
