"""Every kind of bad config fails at start-up with a message naming the field and what is allowed."""

import os
import subprocess
import sys

import pytest

from configs.default import get_config
from envs import registry
from vla_rl_jax import config as config_lib
from vla_rl_jax.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_with(num_devices=8, arg="variant=tiny", **overrides):
  d = get_config(arg).to_dict()  # a plain dict: wrong types reach the validator too
  for path, v in overrides.items():
    *sections, name = path.split("__")
    node = d
    for section in sections:
      node = node[section]
    node[name] = v
  return config_lib.resolve(d, num_devices)


def test_default_variants_resolve():
  for v in ("tiny", "small", "base"):
    cfg = config_lib.resolve(get_config(f"variant={v}"), 8)
    assert cfg.num_trajectories == cfg.rl.num_prompts * cfg.rl.group_size
    assert cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor == 8
    assert cfg.num_calls * cfg.policy.chunk_size == cfg.env.episode_length


def test_config_roundtrips_through_json():
  cfg = resolve_with(env__kwargs={"radius": 0.2})
  assert dict(cfg.env.kwargs)["step_size"] == 0.1   # every declared option recorded, defaults too
  assert config_lib.loads(config_lib.dumps(cfg), 8) == cfg
  hash(cfg)  # closures need hashable static config
  suite = resolve_with(arg="variant=tiny,env=libero_goal", env__kwargs__task_ids=[1, 2])
  assert dict(suite.env.kwargs)["task_ids"] == (1, 2)
  assert config_lib.loads(config_lib.dumps(suite), 8) == suite  # tuples survive JSON's lists
  hash(suite)
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


@pytest.mark.parametrize("overrides, expected", [
    (dict(rl__grad_accum="sum"),
     "config.rl.grad_accum='sum': choose one of ['off', 'per_call'] ('off': one value_and_grad "
     "over every policy call; 'per_call': accumulate the gradient one call of one micro-batch at "
     "a time)"),
    # tiny on 8 devices: rl.minibatch_size 32 over 8 blocks = 4 trajectories per block
    (dict(rl__grad_accum="per_call", rl__micro_batch_size=3),
     "config.rl.micro_batch_size=3: must divide the local minibatch rl.minibatch_size / 8 shuffle "
     "blocks = 4 (allowed: [1, 2, 4], or 0 = all 4)"),
    (dict(rl__grad_accum="per_call", rl__micro_batch_size=8),
     "config.rl.micro_batch_size=8: must divide the local minibatch rl.minibatch_size / 8 shuffle "
     "blocks = 4 (allowed: [1, 2, 4], or 0 = all 4)"),
    (dict(rl__grad_accum="per_call", rl__micro_batch_size=-1),
     "config.rl.micro_batch_size=-1: must be >= 0 (trajectories per micro-batch per shuffle "
     "block; 0 = the whole local minibatch)"),
    (dict(rl__micro_batch_size=2),
     "config.rl.micro_batch_size=2: must be 0 when rl.grad_accum='off' (micro-batches need "
     "rl.grad_accum='per_call')"),
    (dict(rl__remat_calls=1), "config.rl.remat_calls=1: must be True or False"),
])
def test_gradient_accumulation_fields_fail_in_one_line(overrides, expected):
  with pytest.raises(ConfigError) as e:
    resolve_with(**overrides)
  assert str(e.value) == expected


def test_gradient_accumulation_fields_resolve():
  cfg = resolve_with(rl__grad_accum="per_call", rl__micro_batch_size=2, rl__remat_calls=True)
  assert (cfg.rl.grad_accum, cfg.rl.micro_batch_size, cfg.rl.remat_calls) == ("per_call", 2, True)
  assert config_lib.loads(config_lib.dumps(cfg), 8) == cfg
  tiny = resolve_with()
  assert (tiny.rl.grad_accum, tiny.rl.micro_batch_size, tiny.rl.remat_calls) == ("off", 0, False)
  assert resolve_with(arg="variant=base").rl.grad_accum == "per_call"
  assert resolve_with(arg="variant=small").rl.remat_calls   # 275 GB on an H200 without (BENCHMARKS.md)
  # a config saved before these fields existed loads with today's single value_and_grad
  d = config_lib.to_dict(tiny)
  for k in ("grad_accum", "micro_batch_size", "remat_calls"):
    del d["rl"][k]
  assert config_lib.resolve(d, 8).rl.grad_accum == "off"


def test_unknown_fields_and_args_are_rejected():
  c = get_config("variant=tiny")
  d = c.to_dict()
  d["rl"]["grup_size"] = 8
  with pytest.raises(ConfigError) as e:
    config_lib.resolve(d, 8)
  assert str(e.value) == "config.rl.grup_size: unknown field; did you mean 'group_size'?"
  d = c.to_dict()
  d["sed"] = 1
  with pytest.raises(ConfigError, match=r"^config.sed: unknown field; did you mean 'seed'\?$"):
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
  assert out.returncode == 2
  # one line, no traceback; failed at start-up: nothing was traced or compiled, nothing written
  assert out.stderr.strip().splitlines() == [
      "launch.train: config.rl.group_size=1: must be >= 2 (group-relative advantages compare "
      "rollouts from one initial state)"], out.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_cli_unknown_override_is_one_line_with_a_suggestion(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
       f"--workdir={tmp_path}", "--config.rl.grop_size=8"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "launch.train: --config.rl.grop_size=8: config.rl has no field 'grop_size'; "
      "did you mean 'group_size'?"], out.stderr


def _parse_flags(*argv):
  """The ConfigDict launch.train gets from these flags (absl + ml_collections, in process)."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  argv = ["prog", *argv]
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                           sys_argv=argv)   # overrides are read from argv
  fv(argv)
  return holder.value


def test_every_env_option_is_settable_from_flags():
  for name in ("fake_reach", "libero_bowl_on_plate", "libero_goal"):
    c = get_config(f"variant=tiny,env={name}")
    assert set(c.env.kwargs) == set(registry.kwargs_schema(name).names), name
  # a LIBERO option (and a physics field, flat) set through the flag path reaches the env's kwargs
  c = _parse_flags("--config=configs/default.py:variant=tiny,env=libero_goal",
                   "--config.env.kwargs.num_steps_wait=3", "--config.env.kwargs.task_ids=(4,1)",
                   "--config.env.kwargs.timestep=0.0025", "--config.env.kwargs.solver=CG")
  kw = dict(config_lib.resolve(c, 8).env.kwargs)
  assert (kw["num_steps_wait"], kw["task_ids"], kw["timestep"], kw["solver"]) == (3, (4, 1), 0.0025, "CG")
  assert kw["protocol"] == "held_out"   # the preset's value kept


def make_plain_libero_task(*, image_size, cameras):
  """A user's LIBERO-named task whose constructor takes no options at all."""
  raise AssertionError("never built: only its config is read")


def test_a_libero_named_env_without_a_preset_gets_the_shapes_but_not_the_kwargs():
  # names starting with "libero" borrow bowl-on-plate's shapes; its constructor options (layout)
  # would be an unexpected keyword for any other constructor
  registry.register("libero_plain_config_test", f"{__name__}:make_plain_libero_task")
  c = get_config("variant=tiny,env=libero_plain_config_test")
  ref = get_config("variant=tiny,env=libero_bowl_on_plate")
  assert (c.env.episode_length, c.env.image_size, c.policy.chunk_size) == (
      ref.env.episode_length, ref.env.image_size, ref.policy.chunk_size)
  assert dict(ref.env.kwargs)["layout"] == "libero"
  assert dict(c.env.kwargs) == {}


def test_loss_options_are_settable_from_flags_and_roundtrip():
  c = _parse_flags("--config=configs/default.py:variant=tiny", "--config.rl.loss=ppo_clip_token_mean",
                   "--config.rl.loss_kwargs.ratio_level=action", "--config.rl.loss_kwargs.dual_clip=3",
                   "--config.rl.advantage=reinforce_pp")
  cfg = config_lib.resolve(c, 8)
  assert cfg.rl.loss_kwargs == (("dual_clip", 3.0), ("ratio_level", "action"))
  assert cfg.rl.advantage == "reinforce_pp" and cfg.rl.advantage_kwargs == ()
  assert config_lib.loads(config_lib.dumps(cfg), 8) == cfg
  # another loss: only its own options, defaults filled; the pre-filled ones of others are dropped
  gspo = resolve_with(rl__loss="gspo", rl__loss_kwargs__seq_clip_high=0.01)
  assert gspo.rl.loss_kwargs == (("seq_clip_high", 0.01), ("seq_clip_low", 3e-4))
  assert config_lib.loads(config_lib.dumps(gspo), 8) == gspo


def test_config_saved_before_loss_options_loads_and_resumes():
  cfg = resolve_with()
  old = config_lib.to_dict(cfg)
  del old["rl"]["loss_kwargs"], old["rl"]["advantage_kwargs"]
  loaded = config_lib.resolve(old, 8)
  assert loaded == cfg and dict(loaded.rl.loss_kwargs) == {"dual_clip": 0.0, "ratio_level": "token"}
  assert config_lib.resume_conflicts(old, cfg) == []
  assert config_lib.resume_conflicts(old, resolve_with(rl__loss_kwargs__dual_clip=3.0)) == ["rl"]


@pytest.mark.parametrize("overrides, field, allowed", [
    (dict(rl__loss_kwargs__dual_clp=3.0), "rl.loss_kwargs.dual_clp=3.0", "did you mean 'dual_clip'?"),
    (dict(rl__loss_kwargs__dual_clip=0.5), "rl.loss_kwargs.dual_clip=0.5", "0 (off) or > 1"),
    (dict(rl__loss_kwargs__dual_clip=-3.0), "rl.loss_kwargs.dual_clip=-3.0", ">= 0.0"),
    (dict(rl__loss_kwargs__ratio_level="step"), "rl.loss_kwargs.ratio_level='step'",
     "['token', 'action', 'chunk']"),
    (dict(rl__loss="gspo", rl__loss_kwargs__dual_clip=3.0), "rl.loss_kwargs.dual_clip=3.0",
     "not an option of loss 'gspo'"),
    (dict(rl__loss="gspo", rl__loss_kwargs__seq_clip_low=1.0), "rl.loss_kwargs.seq_clip_low=1.0",
     "[0.0, 1.0)"),
    (dict(rl__loss="reinforce", rl__loss_kwargs={"beta": 1}), "rl.loss_kwargs.beta=1",
     "unknown option of loss 'reinforce'"),
    (dict(rl__advantage_kwargs={"eps": 1}), "rl.advantage_kwargs.eps=1",
     "unknown option of advantage 'grpo'"),
    (dict(rl__loss="ppo_clp"), "rl.loss='ppo_clp'", "did you mean 'ppo_clip'?"),
    (dict(rl__advantage="reinforce++"), "rl.advantage='reinforce++'", "'reinforce_pp'"),
    (dict(rl__loss_kwargs=[1, 2]), "rl.loss_kwargs=[1, 2]", "mapping of the loss's options"),
])
def test_bad_loss_and_advantage_options_name_the_field(overrides, field, allowed):
  with pytest.raises(ConfigError) as e:
    resolve_with(**overrides)
  msg = str(e.value)
  assert msg.startswith(f"config.{field}") and allowed in msg and "\n" not in msg, msg


@pytest.mark.parametrize("arg, kwargs, field, allowed", [
    ("", dict(radius=-1.0), "radius=-1.0", "must be > 0"),
    ("", dict(radius=0.5), "radius=0.5", "must be < 0.4123"),   # solved before the policy acts
    ("", dict(step_size=float("nan")), "step_size=nan", "finite"),
    ("", dict(start_noise=-0.1), "start_noise=-0.1", "must be in [0.0, 1.0]"),
    ("", dict(shuffle_targets="yes"), "shuffle_targets='yes'", "True or False"),
    ("", dict(radus=0.1), "radus=0.1", "did you mean 'radius'?"),
    (",env=libero_goal", dict(protocol="same"), "protocol='same'", "held_out"),
    (",env=libero_goal", dict(num_steps_wait=-1), "num_steps_wait=-1", "[0, 500]"),
    (",env=libero_goal", dict(task_ids=(0, 10)), "task_ids=(0, 10)", "[0, 9]"),
    (",env=libero_goal", dict(timestep=0.003), "timestep=0.003", "must divide the control period"),
    (",env=libero_goal", dict(iterations=0), "iterations=0", "[1, 100]"),
    (",env=libero_goal", dict(solver="PGS"), "solver='PGS'", "Newton"),
    (",env=libero_goal", dict(color_jitter=float("inf")), "color_jitter=inf", "finite"),
    (",env=libero_goal", dict(render_kwargs={"tile": 4}), "render_kwargs=", "Python only"),
    (",env=libero_bowl_on_plate", dict(settle_substeps=-3), "settle_substeps=-3", "[0, 2000]"),
])
def test_bad_env_kwargs_name_the_option(arg, kwargs, field, allowed):
  c = get_config("variant=tiny" + arg).to_dict()
  c["env"]["kwargs"].update(kwargs)
  with pytest.raises(ConfigError) as e:
    config_lib.resolve(c, 8)
  msg = str(e.value)
  assert msg.startswith(f"config.env.kwargs.{field}") and allowed in msg, msg


@pytest.mark.parametrize("overrides, field, allowed", [
    (dict(env__camera="wrist"), "env.camera='wrist'", "env 'fake_reach' has cameras ['agentview']"),
    (dict(seed=2**40), "seed=1099511627776", "[0, 2**32)"),
    (dict(seed=-1), "seed=-1", "[0, 2**32)"),
    (dict(optim__warmup_steps=2**40), "optim.warmup_steps=1099511627776", "int32"),
    (dict(optim__warmup_steps=10**6), "optim.warmup_steps=1000000", "<= the run's 240 optimiser"),
    (dict(train__num_steps=2**31), "train.num_steps=2147483648", "int32"),
    (dict(rl__num_prompts=-2**33), "rl.num_prompts=-8589934592", "int32"),
])
def test_ints_and_camera_are_range_checked(overrides, field, allowed):
  d = get_config("variant=tiny").to_dict()
  for path, v in overrides.items():
    *sections, name = path.split("__")
    node = d
    for section in sections:
      node = node[section]
    node[name] = v
  with pytest.raises(ConfigError) as e:
    config_lib.resolve(d, 8)
  msg = str(e.value)
  assert msg.startswith(f"config.{field}:") and allowed in msg, msg


def test_a_camera_the_env_has_is_accepted():
  cfg = resolve_with(arg="variant=tiny,env=libero_goal", env__camera="wrist")
  assert cfg.env.camera == "wrist"   # a LIBERO env renders its wrist camera too
