"""Every kind of bad config fails at start-up with a message naming the field and what is allowed."""

import os
import subprocess
import sys

import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_with(num_devices=8, **overrides):
  d = get_config("variant=tiny").to_dict()  # a plain dict: wrong types reach the validator too
  for path, v in overrides.items():
    section, name = path.split("__")
    d[section][name] = v
  return config_lib.resolve(d, num_devices)


def test_default_variants_resolve():
  for v in ("tiny", "small", "base"):
    cfg = config_lib.resolve(get_config(f"variant={v}"), 8)
    assert cfg.num_trajectories == cfg.rl.num_prompts * cfg.rl.group_size
    assert cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor == 8
    assert cfg.num_calls * cfg.policy.chunk_size == cfg.env.episode_length


def test_config_roundtrips_through_json():
  cfg = resolve_with(env__kwargs={"radius": 0.2, "slots": (1, 2)})
  assert config_lib.loads(config_lib.dumps(cfg), 8) == cfg  # tuples survive JSON's lists
  hash(cfg)  # closures need hashable static config
  assert config_lib.resume_conflicts(config_lib.to_dict(cfg), cfg) == []
  other = resolve_with(rl__clip_high=0.2, train__num_steps=7, mesh__fsdp=2)
  # schedule and topology may change on resume; the algorithm may not
  assert config_lib.resume_conflicts(config_lib.to_dict(cfg), other) == ["env", "rl"]


@pytest.mark.parametrize("overrides, field, allowed", [
    (dict(rl__group_size=1), "rl.group_size", ">= 2"),
    (dict(rl__loss="ppo"), "rl.loss", "ppo_clip"),
    (dict(rl__advantage="gae"), "rl.advantage", "grpo"),
    (dict(env__name="nope"), "env.name", "fake_reach"),
    (dict(rl__num_prompts=0), "rl.num_prompts", "> 0"),
    (dict(rl__num_prompts=3, rl__group_size=2, rl__minibatch_size=6), "rl.num_prompts", "divisible by the 8 batch shards"),
    (dict(rl__minibatch_size=48), "rl.minibatch_size", "must divide"),
    (dict(rl__minibatch_size=4, rl__num_prompts=8), "rl.minibatch_size", "divisible by the 8"),
    (dict(mesh__fsdp=3), "mesh", "must divide the 8"),
    (dict(mesh__data=2), "mesh", "must equal the 8"),
    (dict(mesh__dcn_data=3), "mesh.dcn_data", "must divide mesh.data=8"),
    (dict(mesh__dcn_data=0), "mesh.dcn_data", "> 0"),
    (dict(mesh__max_replicated_mb=-1.0), "mesh.max_replicated_mb", ">= 0"),
    (dict(env__episode_length=15), "env.episode_length", "multiple of policy.chunk_size"),
    (dict(env__image_size=30), "env.image_size", "multiple of model.patch_size"),
    (dict(policy__temperature=0.0), "policy.temperature", "> 0"),
    (dict(rl__clip_low=1.5), "rl.clip_low", "[0, 1)"),
    (dict(rl__clip_high=-0.1), "rl.clip_high", ">= 0"),
    (dict(model__dtype="float16"), "model.dtype", "bfloat16"),
    (dict(model__vocab_size=300), "model.vocab_size", ">= 515"),
    (dict(optim__learning_rate=-1.0), "optim.learning_rate", "> 0"),
    (dict(rl__group_size=2.5), "rl.group_size", "integer"),
    (dict(rl__dynamic_sampling="yes"), "rl.dynamic_sampling", "True or False"),
    (dict(train__eval_num_states=12), "train.eval_num_states", "divisible by the 8"),
    (dict(optim__learning_rate=float("nan")), "optim.learning_rate", "finite"),
    (dict(policy__temperature=float("inf")), "policy.temperature", "finite"),
    (dict(rl__kl_coef=float("nan")), "rl.kl_coef", "finite"),
    (dict(model__param_dtype="bfloat16"), "model.param_dtype", "float32"),
    (dict(distributed__process_id=-5), "distributed.process_id", "-1"),
    (dict(distributed__num_processes=2, distributed__process_id=2), "distributed.process_id", "[0, 2)"),
])
def test_bad_values_name_the_field(overrides, field, allowed):
  with pytest.raises(ConfigError) as e:
    resolve_with(**overrides)
  msg = str(e.value)
  assert f"config.{field}" in msg and allowed in msg, msg


def test_unknown_fields_and_args_are_rejected():
  c = get_config("variant=tiny")
  d = c.to_dict()
  d["rl"]["grup_size"] = 8
  with pytest.raises(ConfigError, match="config.rl has unknown field.*grup_size"):
    config_lib.resolve(d, 8)
  with pytest.raises(ValueError, match="allowed keys"):
    get_config("varient=tiny")
  with pytest.raises(ValueError, match="choose one of"):
    get_config("variant=huge")


def test_cli_bad_config_fails_before_jit_with_clear_message(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
       f"--workdir={tmp_path}", "--config.rl.group_size=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "config.rl.group_size=1: must be >= 2" in out.stderr
  # failed at start-up: nothing was traced or compiled, no checkpoint written
  assert "jit" not in out.stderr.lower() and "Traceback" not in out.stderr
  assert out.returncode == 2 and out.stderr.startswith("launch.train: config.rl.group_size=1")
  assert not os.path.exists(tmp_path / "checkpoints")
