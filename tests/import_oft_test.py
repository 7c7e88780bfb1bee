"""OpenVLA-OFT checkpoint import (models/import_oft.py), without torch: round trips through our own
parameter tree, numpy oracles of timm's and HF Llama's blocks written on the TORCH-layout weights,
and the errors that name the key."""

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from envs.fake import COLOURS
from tests.models_test import init, make_obs, model_of, tiny_cfg
from tests.tokenizer_test import LIBERO_TEXTS, make_sp
from vla_rl_jax.models import import_oft, oft, tokenizer
from vla_rl_jax.models.import_oft import LLM, VB, CheckpointImportError

IMG, SRC_VOCAB = 32, 515 + 64    # tiny: 4x4 patches of 8; OpenVLA-style padded vocabulary


@pytest.fixture(scope="module")
def setup():
  cfg = tiny_cfg()
  params = init(model_of(cfg), make_obs(batch=2))
  params = jax.tree_util.tree_map(np.asarray, params)
  flat = import_oft.export_params(params, cfg.model, src_vocab=SRC_VOCAB,
                                  rng=np.random.default_rng(1))
  return cfg, params, flat


def _imp(cfg, flat, **kw):
  return import_oft.import_params(flat, cfg.model, IMG, proprio_size=2, **kw)


def _assert_trees_equal(got, want):
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0],
                          jax.tree_util.tree_leaves(want)):
    assert a.shape == b.shape, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_round_trip_scanned_and_looped(setup):
  cfg, params, flat = setup
  # the checkpoint holds depth + 1 tower blocks and 64 padding vocabulary rows
  assert f"{VB}.featurizer.blocks.2.attn.qkv.weight" in flat
  assert flat[f"{LLM}.embed_tokens.weight"].shape == (SRC_VOCAB, 32)
  _assert_trees_equal(_imp(cfg, flat), params)
  # the same checkpoint into the looped layout: what OFTVLA(scan_layers=False).init lays out
  loop_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, scan_layers=False))
  loop_abstract = jax.eval_shape(lambda: nn.meta.unbox(model_of(loop_cfg).init(
      jax.random.PRNGKey(0), make_obs(batch=2))["params"]))
  got = _imp(loop_cfg, flat)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(loop_abstract)
  np.testing.assert_array_equal(got["layers_1"]["gate"]["kernel"],
                                params["layers"]["gate"]["kernel"][1])
  np.testing.assert_array_equal(got["dinov2"]["layers_0"]["ls2"], params["dinov2"]["layers"]["ls2"][0])


def test_imported_model_runs_under_jit_and_ignores_dropped_parts(setup):
  """The imported tree drives OFTVLA under jit, and changing what import drops (the last tower
  blocks, the padding vocabulary rows, final norms, SigLIP's pool head) changes nothing."""
  cfg, params, flat = setup
  model, obs = model_of(cfg), make_obs(batch=2)
  apply = jax.jit(lambda p: model.apply({"params": p}, obs))
  want = np.asarray(apply(params))
  noisy = dict(flat)
  rng = np.random.default_rng(7)
  for k in list(noisy):
    if ".blocks.2." in k:
      noisy[k] = rng.normal(size=noisy[k].shape).astype(np.float32)
  for k in (f"{LLM}.embed_tokens.weight", "language_model.lm_head.weight"):
    noisy[k] = noisy[k].copy()
    noisy[k][515:] = 1e3
  noisy[f"{VB}.featurizer.norm.weight"] = np.ones(16, np.float32)
  noisy[f"{VB}.fused_featurizer.attn_pool.latent"] = np.ones((1, 1, 16), np.float32)
  noisy[f"{LLM}.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
  got = np.asarray(apply(jax.tree_util.tree_map(jnp.asarray, _imp(cfg, noisy))))
  np.testing.assert_array_equal(got, want)
  assert np.isfinite(want).all() and want.shape == (2, 8, 256)


def _hf_random(cfg, seed=0):
  """A random checkpoint in OpenVLA's names, with non-trivial norms and LayerScales."""
  rng = np.random.default_rng(seed)
  shapes = import_oft.expected_shapes(cfg.model, IMG, SRC_VOCAB, proprio_size=2)
  return {k: (rng.normal(size=s) * (0.3 if len(s) > 1 else 1.0) + (len(s) == 1)).astype(np.float32)
          for k, s in shapes.items()}


def _ln(h, w, b):
  mu = h.mean(-1, keepdims=True)
  return (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * w + b


def test_vit_block_and_patch_embedding_match_timm_semantics_on_torch_weights(setup):
  """Oracle on the checkpoint's own layouts: torch Linear y = x W^T + b, timm's fused qkv (rows
  q, k, v; heads split by reshape), Conv2d patch embedding over (channel, row, col) kernels."""
  cfg = setup[0]
  flat = _hf_random(cfg)
  params = _imp(cfg, flat)
  g = lambda k: flat[f"{VB}.featurizer.{k}"].astype(np.float64)  # noqa: E731  (DINOv2 here)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 5, 16)).astype(np.float32)
  block = oft.ViTBlock(cfg.model.dinov2, layer_scale=True, approximate_gelu=False,
                       dtype=jnp.float32, param_dtype=jnp.float32)
  p1 = jax.tree_util.tree_map(lambda a: a[1], params["dinov2"]["layers"])
  got, _ = jax.jit(lambda p: block.apply({"params": p}, x))(p1)

  def lin(h, name):
    return h @ g(f"blocks.1.{name}.weight").T + g(f"blocks.1.{name}.bias")
  x64 = x.astype(np.float64)
  qkv = lin(_ln(x64, g("blocks.1.norm1.weight"), g("blocks.1.norm1.bias")), "attn.qkv")
  q, k, v = (t.reshape(2, 5, 2, 8) for t in np.split(qkv, 3, axis=-1))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  att = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(2, 5, 16)
  h = x64 + g("blocks.1.ls1.scale_factor") * lin(att, "attn.proj")
  m = lin(_ln(h, g("blocks.1.norm2.weight"), g("blocks.1.norm2.bias")), "mlp.fc1")
  m = 0.5 * m * (1 + erf(m / np.sqrt(2)))
  want = h + g("blocks.1.ls2.scale_factor") * lin(m, "mlp.fc2")
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)

  # patch embedding: Conv2d(3, W, p, stride p) on CHW pixels vs our Dense on a patch's pixels
  # flattened (row, col, channel), as OFTVLA extracts them
  img = rng.normal(size=(IMG, IMG, 3))
  conv_w, conv_b = g("patch_embed.proj.weight"), g("patch_embed.proj.bias")
  pe = params["dinov2"]["patch_embed"]
  for r, c in ((0, 0), (1, 2), (3, 3)):
    patch = img[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]                     # [p, p, 3]
    conv = np.einsum("oc ij,ijc->o".replace(" ", ""), conv_w, patch) + conv_b
    np.testing.assert_allclose(patch.reshape(-1) @ pe["kernel"] + pe["bias"], conv, rtol=1e-5,
                               atol=1e-5)
  np.testing.assert_array_equal(params["dinov2"]["prefix_tokens"][0], flat[
      f"{VB}.featurizer.cls_token"][0, 0])


def test_decoder_block_matches_hf_llama_semantics_on_torch_weights(setup):
  """HF LlamaDecoderLayer on q/k/v/o_proj weights [out, in]: heads split by reshape, rotate-half
  RoPE, repeat_kv grouping, SwiGLU; against our DecoderBlock on the imported kernels."""
  cfg = setup[0]
  flat = _hf_random(cfg, seed=3)
  params = _imp(cfg, flat)
  g = lambda k: flat[f"{LLM}.layers.1.{k}"].astype(np.float64)  # noqa: E731
  rng = np.random.default_rng(4)
  s = 6
  x = rng.normal(size=(2, s, 32)).astype(np.float32)
  mask = np.tril(np.ones((s, s), bool))[None].repeat(2, 0)
  pos = np.broadcast_to(np.arange(s), (2, s))
  block = oft.DecoderBlock(cfg.model)
  cos, sin = oft.rope(jnp.asarray(pos), 8, 10000.0)
  p1 = jax.tree_util.tree_map(lambda a: a[1], params["layers"])
  got, _ = jax.jit(lambda p: block.apply({"params": p}, x, mask, cos, sin))(p1)

  def rms(h, wt):
    return h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-5) * wt

  def rope(t):  # HF apply_rotary_pos_emb on [B, S, H, hd]
    inv = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)
    ang = np.concatenate([pos[..., None] * inv] * 2, -1)[:, :, None]
    rot = np.concatenate([-t[..., 4:], t[..., :4]], -1)
    return t * np.cos(ang) + rot * np.sin(ang)
  x64 = x.astype(np.float64)
  hn = rms(x64, g("input_layernorm.weight"))
  q = rope((hn @ g("self_attn.q_proj.weight").T).reshape(2, s, 4, 8))
  k = rope((hn @ g("self_attn.k_proj.weight").T).reshape(2, s, 2, 8))
  v = (hn @ g("self_attn.v_proj.weight").T).reshape(2, s, 2, 8)
  k, v = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)             # HF repeat_kv
  logits = np.where(mask[:, None], np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8), -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  h = x64 + np.einsum("bhqk,bkhd->bqhd", w, v).reshape(2, s, 32) @ g("self_attn.o_proj.weight").T
  u = rms(h, g("post_attention_layernorm.weight"))
  gate, up = u @ g("mlp.gate_proj.weight").T, u @ g("mlp.up_proj.weight").T
  want = h + (gate / (1 + np.exp(-gate)) * up) @ g("mlp.down_proj.weight").T
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
  # the head: our action logits use lm_head rows vocab-256 .. vocab-1 of the checkpoint
  np.testing.assert_array_equal(params["lm_head"][:, -256:],
                                flat["language_model.lm_head.weight"][515 - 256:515].T)


def test_projector_columns_follow_the_checkpoint_tower_order(setup):
  """OpenVLA concatenates [featurizer (DINOv2), fused (SigLIP)] features; ours [SigLIP, DINOv2]:
  fc1 applied to the checkpoint's order equals our kernel applied to ours."""
  cfg = setup[0]
  flat = _hf_random(cfg, seed=5)
  params = _imp(cfg, flat)
  rng = np.random.default_rng(6)
  dino, sig = rng.normal(size=16), rng.normal(size=16)
  theirs = flat["projector.fc1.weight"] @ np.concatenate([dino, sig]) + flat["projector.fc1.bias"]
  ours = np.concatenate([sig, dino]) @ params["projector_fc1"]["kernel"] + params[
      "projector_fc1"]["bias"]
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  # a checkpoint whose featurizer is SigLIP imports with tower_order=("siglip", "dinov2")
  swapped = _imp(cfg, import_oft.export_params(params, cfg.model, tower_order=("siglip", "dinov2")),
                 tower_order=("siglip", "dinov2"))
  _assert_trees_equal(swapped, params)


def test_timm_gamma_name_is_accepted(setup):
  cfg, params, flat = setup
  renamed = {k.replace(".ls1.scale_factor", ".ls1.gamma"): a for k, a in flat.items()}
  assert any(k.endswith("ls1.gamma") for k in renamed)
  _assert_trees_equal(_imp(cfg, renamed), params)


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.pop(f"{LLM}.layers.1.mlp.up_proj.weight"),
     rf"missing key {LLM}\.layers\.1\.mlp\.up_proj\.weight \(expected shape \[64, 32\]\)"),
    # the tower's last (dropped) block must be there: depth + 1 blocks
    (lambda f: [f.pop(k) for k in list(f) if ".featurizer.blocks.2." in k and "fused" not in k],
     rf"missing key {VB}\.featurizer\.blocks\.2\."),
    (lambda f: f.__setitem__(f"{VB}.fused_featurizer.blocks.3.norm1.weight", np.ones(16)),
     rf"unexpected key {VB}\.fused_featurizer\.blocks\.3\.norm1\.weight \(shape \[16\]\)"),
    (lambda f: f.__setitem__("action_head.fc.weight", np.ones((7, 32))),
     r"unexpected key action_head\.fc\.weight \(shape \[7, 32\]\)"),
    (lambda f: f.__setitem__(f"{LLM}.layers.0.self_attn.k_proj.weight", np.ones((32, 32))),
     rf"{LLM}\.layers\.0\.self_attn\.k_proj\.weight: expected shape \[16, 32\], found \[32, 32\]"),
    (lambda f: f.__setitem__(f"{VB}.featurizer.pos_embed", np.ones((1, 17, 16))),
     rf"{VB}\.featurizer\.pos_embed: expected shape \[1, 16, 16\], found \[1, 17, 16\]"),
    (lambda f: f.__setitem__("language_model.lm_head.weight", np.ones((SRC_VOCAB + 1, 32))),
     r"language_model\.lm_head\.weight: expected shape \[579, 32\], found \[580, 32\]"),
    (lambda f: f.__setitem__(f"{LLM}.embed_tokens.weight", np.ones((500, 32))),
     r"embed_tokens\.weight: 500 rows, fewer than model\.vocab_size=515"),
])
def test_errors_name_the_key(setup, edit, match):
  cfg, _, flat = setup
  bad = dict(flat)
  edit(bad)
  with pytest.raises(CheckpointImportError, match=match):
    _imp(cfg, bad)


# ------------------------------------------------------------------------------------------------
# launch.import_openvla_oft: safetensors shards + config.json -> a workdir eval/serve/init_from load


def _write_shards(flat, d, hf=None):
  from safetensors.numpy import save_file
  os.makedirs(d, exist_ok=True)
  keys = sorted(flat)
  half = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
  for name, ks in half.items():
    save_file({k: flat[k] for k in ks}, os.path.join(d, name))
  with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {k: n for n, ks in half.items() for k in ks}}, f)
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(hf or {}, f)


def test_launcher_writes_a_checkpoint_init_from_and_eval_load(setup, tmp_path):
  from vla_rl_jax import importing as launcher
  from tests.models_test import tiny_oft_dict
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax import config as config_lib
  from vla_rl_jax import trainer
  from vla_rl_jax.builders import build
  cfg_dict = tiny_oft_dict()
  cfg = config_lib.resolve(cfg_dict, jax.device_count())
  b = build(cfg)
  rng = np.random.default_rng(8)
  params = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape).astype(np.float32),
                                  b.abstract_state[0].params)
  flat = import_oft.export_params(params, cfg.model, src_vocab=SRC_VOCAB)
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  hf = {"image_sizes": [IMG, IMG], "n_action_bins": 256,
        "timm_model_ids": ["vit_large_patch8_reg4_dinov2", "vit_so400m_patch8_siglip"],
        "text_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_key_value_heads": 2}}
  _write_shards(flat, src, hf)
  # a tokenizer file that is not one is refused before anything is written
  with open(os.path.join(src, "tokenizer.model"), "wb") as f:
    f.write(b"sp")
  with pytest.raises(config_lib.ConfigError, match="tokenizer.model.*cannot be read as a "
                     "SentencePiece model"):
    launcher.convert(src, out, cfg_dict, log=lambda s: None)
  assert not os.path.exists(out)
  # a real one becomes the run's tokenizer: 515 pieces for the tiny 515-row vocabulary, whose last
  # 256 rows are the action ids (OpenVLA's layout: Llama-2's 32000 pieces, 32000 rows)
  make_sp(tmp_path / "src" / "tokenizer.model", 515, LIBERO_TEXTS + [
      tokenizer.OPENVLA_PROMPT.format(instruction=f"reach the {c} target") for c in COLOURS])
  assert launcher.convert(src, out, cfg_dict, log=lambda s: None) == "tokenizer.model"
  copy = os.path.join(os.path.abspath(out), "tokenizer.model")
  saved = ckpt_lib.read_config(out, jax.device_count())
  assert (saved.model.tokenizer, saved.model.prompt) == (copy, "openvla")
  # train.init_from reads it as it reads an SFT run's workdir (with the import's tokenizer: a
  # different one is a config conflict naming the field)
  with pytest.raises(config_lib.ConfigError, match=r"model.tokenizer='.*tokenizer.model', this "
                     r"config model.tokenizer='bytes'"):
    trainer.init_params(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, init_from=out)), b)
  run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=out),
                                model=dataclasses.replace(cfg.model, tokenizer=copy,
                                                          prompt="openvla"))
  step, got = trainer.init_params(run_cfg, b)
  assert step == 0
  _assert_trees_equal(jax.tree_util.tree_map(np.asarray, got), params)
  # eval / serve's path: the saved config rebuilds the model, restore_for_inference verifies
  ecfg = ckpt_lib.read_config(out, jax.device_count())
  eb = build(ecfg)
  text = np.asarray(eb.text_table)       # OpenVLA's prompt in the imported tokenizer's ids
  assert tokenizer.get(copy, "openvla").decode(text[0]) == (
      f"In: What action should the robot take to {eb.env.instructions[0]}?\nOut:")
  ck = ckpt_lib.Checkpointer(out, ecfg.train.keep_checkpoints)
  found = ck.restore_for_inference(None, *eb.abstract_state, eb.state_shardings,
                                   eb.env_stats_shardings)
  ck.close()
  assert found[0] == 0
  np.testing.assert_array_equal(np.asarray(found[1].params["lm_head"]), params["lm_head"])
  # a second import into the same workdir is refused
  with pytest.raises(ValueError, match="already holds a run"):
    launcher.convert(src, out, cfg_dict, log=lambda s: None)


@pytest.mark.parametrize("hf, match", [
    ({"image_sizes": [224, 224]}, r"config.json image_sizes=\[224, 224\] but env.image_size=32"),
    ({"timm_model_ids": ["vit_large_patch14_reg4_dinov2", "vit_so400m_patch14_siglip_224"]},
     r"timm_model_ids='vit_large_patch14_reg4_dinov2' but model.patch_size=8"),
    ({"text_config": {"num_hidden_layers": 32}},
     r"text_config.num_hidden_layers=32 but model.depth=2"),
])
def test_launcher_names_the_mismatching_config_field(hf, match):
  from vla_rl_jax import importing as launcher
  from vla_rl_jax import config as config_lib
  cfg = tiny_cfg()
  with pytest.raises(ValueError, match=match):
    launcher.check_hf_config(hf, cfg)
  del config_lib


def test_launcher_cli_exits_2_with_one_line_naming_the_key(setup, tmp_path):
  cfg, params, flat = setup
  bad = dict(flat)
  bad.pop(f"{LLM}.norm.weight")
  src = str(tmp_path / "src")
  _write_shards(bad, src)
  args = ["--config=configs/default.py:variant=tiny", "--config.model.name=oft",
          "--config.model.ordinal_head=False", "--config.model.width=32",
          "--config.model.num_heads=4", "--config.model.num_kv_heads=2", "--config.model.mlp_dim=64",
          "--config.model.siglip.width=16", "--config.model.siglip.depth=2",
          "--config.model.siglip.num_heads=2", "--config.model.siglip.mlp_dim=32",
          "--config.model.dinov2.width=16", "--config.model.dinov2.depth=2",
          "--config.model.dinov2.num_heads=2", "--config.model.dinov2.mlp_dim=32",
          "--config.model.dinov2.num_registers=2", "--config.model.use_proprio=True"]
  r = subprocess.run([sys.executable, "-m", "launch.import_openvla_oft", f"--src={src}",
                      f"--out={tmp_path / 'out'}", *args], capture_output=True, text=True,
                     cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 2, r.stderr[-2000:]
  lines = r.stderr.strip().splitlines()
  assert lines[-1].startswith(f"launch.import_openvla_oft: missing key {LLM}.norm.weight "
                              f"(expected shape [32])"), r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_7b_checkpoint_shapes_match_the_model_without_allocating():
  """OpenVLA-OFT-7B's expected tensors (32064-row vocabulary, 27 SigLIP and 24 DINOv2 blocks)
  hold exactly our 7b model's parameters plus what import drops, and its real config.json passes."""
  from configs.default import get_config
  from vla_rl_jax import importing as launcher
  from vla_rl_jax import config as config_lib
  cfg = config_lib.resolve(get_config("variant=7b"), 8)
  m = cfg.model
  shapes = import_oft.expected_shapes(m, 224, src_vocab=32064)
  size = lambda keys: sum(int(np.prod(shapes[k])) for k in keys)  # noqa: E731
  assert f"{VB}.fused_featurizer.blocks.26.attn.qkv.weight" in shapes      # SigLIP: 27 blocks
  assert f"{VB}.featurizer.blocks.23.ls2.scale_factor" in shapes           # DINOv2: 24 blocks
  assert f"{VB}.fused_featurizer.blocks.27.norm1.weight" not in shapes
  assert shapes[f"{LLM}.layers.31.self_attn.k_proj.weight"] == (4096, 4096)
  assert shapes[f"{VB}.featurizer.pos_embed"] == (1, 256, 1024)
  assert shapes["projector.fc1.weight"] == (8704, 2176)
  last = [k for k in shapes if ".fused_featurizer.blocks.26." in k or ".featurizer.blocks.23." in k]
  pad_rows = 2 * 64 * 4096
  assert size(shapes) - size(last) - pad_rows == oft.param_count(cfg)["total"]
  # SigLIP-So400m's 27th block (15.2M) and DINOv2-L's 24th (12.6M), as docs/models.md says
  assert round(size([k for k in last if "fused" in k]) / 1e6, 1) == 15.2
  assert round(size([k for k in last if "fused" not in k]) / 1e6, 1) == 12.6
  launcher.check_hf_config({"image_sizes": [224, 224], "n_action_bins": 256,
                            "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m",
                                               "vit_so400m_patch14_siglip_224"]}, cfg)
  assert launcher.tower_order({"timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m",
                                                  "vit_so400m_patch14_siglip_224"]}) == (
      "dinov2", "siglip")
