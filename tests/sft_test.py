"""SFT (vla_rl_jax/sft.py, trainer.train_sft, launch.sft) and RL from its checkpoint (train.init_from).

Demonstrations come from FakeReach's scripted expert through demos.record, the writer
launch.make_demos uses. The SFT run must lower the loss and raise token accuracy and greedy success
(all three stay put with the update disabled); RL started from its workdir must begin at exactly its
parameters, with them as the KL reference; bad inputs end the launchers with one line, status 2.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from configs.libero_sft import get_config as sft_config
from envs import registry
from vla_rl_jax import checkpoint as ckpt_lib
from vla_rl_jax import config as config_lib
from vla_rl_jax import demos, sft, trainer
from vla_rl_jax.builders import build
from vla_rl_jax.evaluation import make_eval_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_STEPS = 80


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("demos"))
  env = registry.make("fake_reach", image_size=32, cameras=("agentview",))
  demos.record(d, env, env.expert_action, 4, 16, name="fake_reach", env_kwargs={},
               log=lambda text: None)
  return d


def sft_cfg(demo_dir, **over):
  c = sft_config(f"suite=fake_reach,demos={demo_dir}")
  c.sft.num_steps, c.sft.batch_size, c.sft.log_every, c.sft.checkpoint_every = SFT_STEPS, 32, 1, 40
  for k, v in over.items():
    section, name = k.split("__")
    c[section][name] = v
  return c


@pytest.fixture(scope="module")
def sft_run(demo_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  summary = trainer.train_sft(sft_cfg(demo_dir), workdir, quiet=True)
  return workdir, summary


def rl_cfg(init_from="", **over):
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.train.num_steps, c.train.eval_every, c.train.eval_num_states = 1, 100, 8
  c.train.init_from = init_from
  for k, v in over.items():
    section, name = k.split("__")
    c[section][name] = v
  return c


def leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_chunk_targets_mask_past_the_end():
  acts = np.array([[-1.0, 1.0], [0.0, 0.5], [1.0, -1.0]], np.float32)   # T = 3, D = 2
  tokens, mask = sft.chunk_targets(acts, 2)                              # K = 2: L = 4
  assert tokens.shape == mask.shape == (3, 4)
  # OpenVLA's bins: -1 -> index 255, 0 -> 128 (edges +-1/255 around it), 0.5 -> 64, +1 -> 0
  np.testing.assert_array_equal(tokens[0], [255, 0, 128, 64])
  np.testing.assert_array_equal(tokens[2], [0, 255, 0, 0])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])


def test_sft_lowers_loss_and_raises_accuracy_and_success(sft_run, demo_dir):
  workdir, summary = sft_run
  rows = summary["train"]
  assert [r["step"] for r in rows] == list(range(1, SFT_STEPS + 1))
  first, last = rows[0], rows[-1]
  # untrained: about ln(256) = 5.5 nats and no token right; disabled updates stay there
  assert first["loss"] > 4.5 and first["token_accuracy"] < 0.1
  assert last["loss"] < 0.3 * first["loss"], (first, last)
  assert last["token_accuracy"] > 0.6, last
  assert ckpt_lib.Checkpointer(workdir, 3).all_steps() == [40, SFT_STEPS]
  # the saved config rebuilds the state (what launch.eval does) and the policy acts better greedily
  cfg = ckpt_lib.read_config(workdir, jax.device_count())
  b = build(cfg)
  restored = ckpt_lib.Checkpointer(workdir, 3).restore_for_inference(
      None, *b.abstract_state, b.state_shardings, b.env_stats_shardings)
  eval_fn = make_eval_fn(b, num_states=64)
  before = float(eval_fn(b.init_fn()[0].params)["success_rate"])
  after = float(eval_fn(restored[1].params)["success_rate"])
  assert after >= before + 0.3 and after >= 0.8, (before, after)


def test_rl_starts_from_the_sft_parameters(sft_run, tmp_path):
  workdir, summary = sft_run
  sft_params = leaves(summary["final_state"].params)
  cfg = config_lib.resolve(rl_cfg(workdir, rl__kl_coef=0.1), jax.device_count())
  b = build(cfg)
  own = ckpt_lib.Checkpointer(str(tmp_path / "fresh"), 3)
  step, state, _ = trainer.start_state(cfg, b, own, str(tmp_path / "fresh"))
  own.close()
  assert step == 0 and int(state.step) == 0
  for got, want, ref in zip(leaves(state.params), sft_params, leaves(state.ref_params), strict=True):
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ref, want)
  # the optimiser starts fresh (Adam's moments and count at zero), not from SFT's
  assert all(not np.any(x) for x in leaves(state.opt_state))

  # the trainer's loop: the KL reference it ends with is the SFT policy, and the step's updates
  # moved the parameters by at most about lr each (Adam) from it; from the random init they would
  # be far away
  out = trainer.train_and_evaluate(rl_cfg(workdir, rl__kl_coef=0.1), str(tmp_path / "rl"),
                                   quiet=True)
  final = out["final_state"]
  for ref, want in zip(leaves(final.ref_params), sft_params, strict=True):
    np.testing.assert_array_equal(ref, want)
  bound = 1.5 * cfg.optim.learning_rate * cfg.num_minibatches * cfg.rl.num_epochs
  moved = max(float(np.max(np.abs(p - w))) for p, w in zip(leaves(final.params), sft_params))
  assert moved <= bound, (moved, bound)

  # resuming that run: its own checkpoint (step 1) wins over init_from
  again = config_lib.resolve(rl_cfg(workdir, rl__kl_coef=0.1, train__num_steps=2),
                             jax.device_count())
  ck = ckpt_lib.Checkpointer(str(tmp_path / "rl"), 3)
  logs = []
  step, state, _ = trainer.start_state(again, build(again), ck, str(tmp_path / "rl"), logs.append)
  ck.close()
  assert step == 1 and int(state.step) == 1
  assert any("not read again" in line for line in logs), logs


def test_kl_off_has_no_reference(sft_run, tmp_path):
  cfg = config_lib.resolve(rl_cfg(sft_run[0]), jax.device_count())
  own = ckpt_lib.Checkpointer(str(tmp_path), 3)
  _, state, _ = trainer.start_state(cfg, build(cfg), own, str(tmp_path))
  own.close()
  assert state.ref_params is None


def test_model_mismatch_is_one_line(sft_run):
  cfg = config_lib.resolve(rl_cfg(sft_run[0], model__width=32, model__mlp_dim=64),
                           jax.device_count())
  with pytest.raises(config_lib.ConfigError) as e:
    trainer.init_params(cfg, build(cfg))
  msg = str(e.value)
  assert "\n" not in msg
  assert "model.width=64" in msg and "model.width=32" in msg and "model.mlp_dim" in msg, msg


def test_init_step_and_source_checked(sft_run, tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r"train\.init_step.*needs train\.init_from"):
    config_lib.resolve(rl_cfg("", train__init_step=3))
  cfg = config_lib.resolve(rl_cfg(str(tmp_path)), jax.device_count())
  with pytest.raises(config_lib.ConfigError, match="not the workdir of a training or SFT run"):
    trainer.init_params(cfg, build(cfg))
  cfg = config_lib.resolve(rl_cfg(sft_run[0], train__init_step=40), jax.device_count())
  step, _ = trainer.init_params(cfg, build(cfg))
  assert step == 40


def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _one_line(r, *want):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  for w in want:
    assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def wide_actions(tmp_path_factory):
  """fake_reach demonstrations whose actions are 3-D (the env takes 2-D ones)."""
  d = str(tmp_path_factory.mktemp("wide"))
  imgs = {"agentview": np.zeros((4, 32, 32, 3), np.uint8)}
  f = demos.write_episode(d, 0, 0, np.zeros((3, 3), np.float32), imgs,
                          np.zeros((4, 2), np.float32), seed=0)
  demos.write_manifest(d, {"env": "fake_reach", "cameras": ["agentview"], "image_size": [32, 32],
                           "instructions": ["reach the red target"],
                           "episodes": [{"file": f, "task_id": 0, "instruction":
                                         "reach the red target", "length": 3, "seed": 0}]})
  return d


def test_launcher_bad_inputs_are_one_line(demo_dir, wide_actions, tmp_path):
  base = ["--config=configs/libero_sft.py:suite=fake_reach", f"--workdir={tmp_path / 'w'}"]
  _one_line(_run("launch.sft", *base, f"--config.sft.demos={tmp_path / 'missing'}"),
            "launch.sft: config.sft.demos=", "no such directory")
  _one_line(_run("launch.sft", "--config=configs/libero_sft.py:suite=libero_spatial",
                 f"--workdir={tmp_path / 'w'}", f"--config.sft.demos={demo_dir}"),
            "env 'fake_reach'", "config.env.name='libero_spatial'")
  _one_line(_run("launch.sft", *base, f"--config.sft.demos={demo_dir}",
                 "--config.env.image_size=64"),
            "32x32 images", "config.env.image_size=64")
  _one_line(_run("launch.sft", *base, f"--config.sft.demos={wide_actions}"),
            "3-D actions", "takes 2-D actions")


def test_train_launcher_model_mismatch_is_one_line(sft_run, tmp_path):
  _one_line(_run("launch.train", "--config=configs/default.py:variant=tiny",
                 f"--workdir={tmp_path / 'rl'}", f"--config.train.init_from={sft_run[0]}",
                 "--config.model.depth=1"),
            "launch.train: config.train.init_from=", "model.depth=2", "model.depth=1")


def test_sft_workdir_evaluates_and_resumes(sft_run, demo_dir, tmp_path):
  workdir, summary = sft_run
  out = tmp_path / "eval.json"
  r = _run("launch.eval", f"--workdir={workdir}", "--num_states=8", f"--out={out}")
  assert r.returncode == 0, r.stderr[-3000:]
  rep = json.loads(out.read_text())
  assert rep["step"] == SFT_STEPS and rep["env"] == "fake_reach" and 0 <= rep["success_rate"] <= 1
  # restarted with more steps it continues from its checkpoint (the step counter says so); on a
  # copy, so the other tests see the run as it was
  again = str(tmp_path / "again")
  shutil.copytree(workdir, again)
  more = trainer.train_sft(sft_cfg(demo_dir, sft__num_steps=SFT_STEPS + 1), again, quiet=True)
  assert [r["step"] for r in more["train"]] == [SFT_STEPS + 1]
  assert int(more["final_state"].step) == SFT_STEPS + 1


def test_sft_starts_from_init_from(sft_run, demo_dir, tmp_path):
  """A fresh SFT run with train.init_from (launch.pretrain -> launch.sft) starts from that run's
  parameters: one step at lr 1e-6 stays within about lr of them (from the random init it would be
  far), and a model that differs is refused naming the field."""
  workdir, summary = sft_run
  src = leaves(summary["final_state"].params)
  c = sft_cfg(demo_dir, sft__num_steps=1, sft__learning_rate=1e-6, sft__checkpoint_every=1)
  c.train.init_from = workdir
  out = trainer.train_sft(c, str(tmp_path / "sft2"), quiet=True)
  moved = max(float(np.max(np.abs(p - w))) for p, w in zip(leaves(out["final_state"].params), src,
                                                            strict=True))
  assert moved <= 1.5e-6, moved
  c.model.width, c.model.mlp_dim = 32, 64
  with pytest.raises(config_lib.ConfigError, match=r"init_from=.*model\.width=64"):
    trainer.train_sft(c, str(tmp_path / "sft3"), quiet=True)


def test_record_runs_whole_batches_in_every_round(tmp_path, monkeypatch):
  """demos.record fills each round of expert episodes to whole batches with more tries of the tasks
  still short: one episode-program shape for the whole recording (a retry round of fewer episodes
  compiled anew, minutes per round on LIBERO-MJX). An expert that only moves within 0.3 of its
  target fails about half of the starts, so retry rounds happen."""
  from vla_rl_jax import evaluation
  env = registry.make("fake_reach", image_size=8, cameras=("agentview",))

  def picky_expert(state):
    ps = state.pipeline_state
    near = jnp.linalg.norm(ps.targets[state.info["task_id"]] - ps.pos) < 0.3
    return jnp.where(near, env.expert_action(state), 0.0)

  sizes, real = [], evaluation.run_episodes
  monkeypatch.setattr(evaluation, "run_episodes",
                      lambda e, a, starts, *args, **kw: sizes.append(len(starts)) or real(
                          e, a, starts, *args, **kw))
  m = demos.record(str(tmp_path), env, picky_expert, 2, 8, name="fake_reach", env_kwargs={},
                   batch=6, max_attempts=8, log=lambda text: None)
  assert len(sizes) >= 2, sizes                         # the picky expert needed retry rounds
  assert all(n % 6 == 0 for n in sizes), sizes          # every round whole batches of 6
  per_task = np.bincount([e["task_id"] for e in m["episodes"]], minlength=env.num_tasks)
  assert per_task.tolist() == [2] * env.num_tasks
