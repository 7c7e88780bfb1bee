"""An OpenVLA-OFT checkpoint directory -> a workdir that launch.eval / launch.serve load and
train.init_from starts RL from: reads the safetensors shards and config.json, checks them against the
config, maps the tensors (vla_rl_jax/models/import_oft.py) and saves step 0 of a fresh train state.
`python -m launch.import_openvla_oft` is its command line; the module docstring there says what is
read, checked and written. The checkpoint's tokenizer (tokenizer.model, else tokenizer.json) is
copied into the workdir and becomes the run's model.tokenizer, with OpenVLA's prompt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

PROG = "launch.import_openvla_oft"   # the command that prints convert's log line
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def read_safetensors(src: str) -> dict:
  """{name: numpy array} from model.safetensors or the shards its index json lists."""
  from safetensors import safe_open  # noqa: PLC0415
  index = os.path.join(src, "model.safetensors.index.json")
  single = os.path.join(src, "model.safetensors")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index}: no weight_map")
    files = sorted(set(weight_map.values()))
  elif os.path.exists(single):
    files, weight_map = ["model.safetensors"], None
  else:
    raise ValueError(f"--src={src}: holds neither model.safetensors nor "
                     f"model.safetensors.index.json")
  out = {}
  for name in files:
    path = os.path.join(src, name)
    if not os.path.exists(path):
      raise ValueError(f"{index}: lists {name}, which is not in {src}")
    with safe_open(path, framework="np") as f:
      for k in f.keys():
        if k in out:
          raise ValueError(f"{name}: tensor {k} appears in two shards")
        if weight_map is not None and weight_map.get(k) != name:
          raise ValueError(f"{name}: holds {k}, which the index puts in {weight_map.get(k)}")
        out[k] = f.get_tensor(k)
  if weight_map is not None:
    lost = sorted(set(weight_map) - set(out))
    if lost:
      raise ValueError(f"{index}: lists {lost[0]}, absent from its shard {weight_map[lost[0]]}")
  return out


def tower_order(hf: dict) -> tuple[str, ...] | None:
  """The tower kinds of (featurizer, fused_featurizer) from config.json's timm_model_ids."""
  ids = hf.get("timm_model_ids")
  if not ids:
    return None
  kinds = []
  for i in ids:
    kinds.append("dinov2" if "dino" in i else "siglip" if "siglip" in i else i)
  return tuple(kinds)


def check_hf_config(hf: dict, cfg) -> None:
  """config.json's fields against cfg; ValueError naming the mismatching field."""
  m = cfg.model
  def bad(field, theirs, ours, what):
    raise ValueError(f"config.json {field}={theirs!r} but {what}={ours!r}: the checkpoint is not "
                     f"this variant (choose --variant / --config to match)")
  for s in hf.get("image_sizes") or []:
    if s != cfg.env.image_size:
      bad("image_sizes", hf["image_sizes"], cfg.env.image_size, "env.image_size")
  for i in hf.get("timm_model_ids") or []:
    p = re.search(r"patch(\d+)", i)
    if p and int(p.group(1)) != m.patch_size:
      bad("timm_model_ids", i, m.patch_size, "model.patch_size")
  order = tower_order(hf)
  on = sorted(t for t in ("siglip", "dinov2") if getattr(m, t).depth > 0)
  if order is not None and sorted(order) != on:
    bad("timm_model_ids", hf["timm_model_ids"], on, "the towers on (depth > 0)")
  if "n_action_bins" in hf and hf["n_action_bins"] != m.num_bins:
    bad("n_action_bins", hf["n_action_bins"], m.num_bins, "model.num_bins")
  text = hf.get("text_config") or {}
  for field, ours, what in (("hidden_size", m.width, "model.width"),
                            ("num_hidden_layers", m.depth, "model.depth"),
                            ("num_attention_heads", m.num_heads, "model.num_heads"),
                            ("num_key_value_heads", m.num_kv_heads or m.num_heads,
                             "model.num_kv_heads"),
                            ("intermediate_size", m.mlp_dim, "model.mlp_dim"),
                            ("rms_norm_eps", m.norm_eps, "model.norm_eps"),
                            ("rope_theta", m.rope_theta, "model.rope_theta")):
    if field in text and text[field] != ours:
      bad(f"text_config.{field}", text[field], ours, what)


def convert(src: str, out: str, config_dict, log=print) -> str:
  """Reads src, writes out (see the module docstring); returns the tokenizer file copied or ''."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from vla_rl_jax import checkpoint as ckpt_lib  # noqa: PLC0415
  from vla_rl_jax import config as config_lib  # noqa: PLC0415
  from vla_rl_jax.builders import build  # noqa: PLC0415
  from vla_rl_jax.models import import_oft  # noqa: PLC0415

  tok_src = next((os.path.join(src, n) for n in TOKENIZER_FILES
                  if os.path.exists(os.path.join(src, n))), "")
  if tok_src:   # checked (loads, fits the vocabulary) from --src; the run reads its copy in out
    config_dict = _with_tokenizer(config_dict, tok_src)
  cfg = config_lib.resolve(config_dict, jax.device_count())
  if cfg.model.name != "oft":
    raise config_lib.ConfigError(f"model.name={cfg.model.name!r}: an OpenVLA-OFT checkpoint imports "
                                 f"into model.name='oft' only (variants small, base, 7b)")
  hf_path = os.path.join(src, "config.json")
  hf = {}
  if os.path.exists(hf_path):
    with open(hf_path) as f:
      hf = json.load(f)
    check_hf_config(hf, cfg)
  if os.path.exists(os.path.join(out, ckpt_lib.CONFIG_FILE)) or os.path.isdir(
      os.path.join(out, "checkpoints")):
    raise ValueError(f"--out={out}: already holds a run (config.json or checkpoints/); give a new "
                     f"directory")
  flat = read_safetensors(src)
  b = build(cfg)
  abstract = b.abstract_state[0].params
  proprio = 0
  if cfg.model.use_proprio:
    proprio = abstract["proprio_fc1"]["kernel"].shape[0]
  order = tower_order(hf) or import_oft.DEFAULT_TOWER_ORDER
  params = import_oft.import_params(flat, cfg.model, cfg.env.image_size, proprio_size=proprio,
                                    tower_order=order, dtype=jnp.dtype(cfg.model.param_dtype))
  del flat
  shapes = lambda t: {jax.tree_util.keystr(p): tuple(x.shape)  # noqa: E731
                      for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  want, got = shapes(abstract), shapes(params)
  for name in sorted(set(want) | set(got)):
    if want.get(name) != got.get(name):   # a mapping bug, not a user error
      raise AssertionError(f"imported parameter {name}: {got.get(name)}, model {want.get(name)}")
  # the imported parameters go straight to their shards and the optimiser state is built around
  # them (no random initialisation first: 7b peaks at params + Adam moments, not twice the params)
  state, stats = b.state_from_params(jax.device_put(params, b.state_shardings.params))
  del params
  if tok_src:
    copy = os.path.abspath(os.path.join(out, os.path.basename(tok_src)))
    os.makedirs(out, exist_ok=True)
    shutil.copy2(tok_src, copy)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tokenizer=copy))
  ckpt_lib.write_config(out, cfg)
  ckpt = ckpt_lib.Checkpointer(out, cfg.train.keep_checkpoints)
  try:
    ckpt.save(0, state, stats)
  finally:
    ckpt.close()
  copied = os.path.basename(tok_src)
  log(f"{PROG}: wrote {os.path.abspath(out)} (step 0, {sum(np.prod(s) for s in want.values()):,} "
      f"parameters, " + (f"tokenizer {copied} with OpenVLA's prompt" if copied else
                         f"no tokenizer in --src: model.tokenizer={cfg.model.tokenizer!r}") + ")")
  return copied


def _with_tokenizer(config_dict, path: str) -> dict:
  """config_dict with model.tokenizer = the checkpoint's own file and model.prompt = OpenVLA's."""
  d = config_dict.to_dict() if hasattr(config_dict, "to_dict") else dict(config_dict)
  d["model"] = {**d["model"], "tokenizer": os.path.abspath(path), "prompt": "openvla"}
  return d
