"""The unfused baseline runs the same algorithm as the fused step, and the benchmark's output is clean.

The baseline (vla_rl_jax/unfused.py) is what `fused_unfused_ratio` divides by: if it rolled out
other episodes or updated differently, the ratio would compare two different programs.
"""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax.builders import build
from vla_rl_jax.rollout import rollout
from vla_rl_jax.train_step import make_train_step
from vla_rl_jax.unfused import UnfusedStep

# the fused/unfused equivalence behind fused_unfused_ratio: rerun where the ratio is measured
pytestmark = pytest.mark.accelerator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def built():
  c = get_config("variant=tiny,env=fake_reach")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 4, 4, 8
  b = build(config_lib.resolve(c, 1), devices=jax.devices()[:1])
  return b, UnfusedStep(b)


@pytest.mark.parametrize("temperature", [0.0, 1.6])
def test_same_episodes_as_the_fused_rollout(built, temperature):
  """Greedy: bit-identical episodes. Sampled: identical too (the same per-episode keys)."""
  b, unfused = built
  cfg = b.cfg
  state, _ = b.init_fn()
  rng = jax.random.PRNGKey(3)
  fused_rollout = jax.jit(lambda p, r: rollout(
      b.env, b.policy, p, r, text_table=b.text_table, num_prompts=4, group_size=4,
      num_calls=cfg.num_calls, temperature=temperature, camera=cfg.env.camera, store="images"))
  tf, _ = jax.device_get(fused_rollout(state.params, rng))
  tu = jax.device_get(unfused.rollout(state.params, rng, 4, temperature))
  mask = tf.token_mask
  assert 0 < mask.sum() < mask.size  # some episodes ended early: the freezing is exercised
  assert 0 < tf.reward.sum() < tf.reward.size  # successes and failures
  np.testing.assert_array_equal(tu.reward, tf.reward)
  np.testing.assert_array_equal(tu.length, tf.length)
  np.testing.assert_array_equal(tu.task_id, tf.task_id)
  np.testing.assert_array_equal(tu.token_mask, mask)
  np.testing.assert_array_equal(tu.tokens * (mask > 0), tf.tokens * (mask > 0))
  ran = mask.max(-1) > 0  # [N, C] calls an episode took
  np.testing.assert_array_equal(tu.frames["image"][ran], tf.frames["image"][ran])
  # the baseline's old log-probs come from its separate pass over the stored frames
  np.testing.assert_allclose(tu.logp * mask, tf.logp * mask, atol=1e-5)


def test_one_train_step_matches_the_fused_step(built):
  b, unfused = built
  state_f, stats_f = b.init_fn()
  state_u, stats_u = b.init_fn()
  p0 = jax.device_get(state_u.params)
  state_f, stats_f, mf = make_train_step(b)(state_f, stats_f)
  state_u, stats_u, mu = unfused(state_u, stats_u)
  mf = jax.device_get(mf)
  assert mu["updates_applied"] == float(mf["updates_applied"]) > 0
  for key in ("success_rate", "episode_length", "valid_group_frac"):
    assert mu[key] == float(mf[key]), key
  assert math.isclose(mu["loss"], float(mf["loss"]), rel_tol=1e-4, abs_tol=1e-6)
  assert int(state_u.step) == int(state_f.step) == 1
  np.testing.assert_array_equal(stats_u.task_count, stats_f.task_count)
  np.testing.assert_allclose(stats_u.task_success, stats_f.task_success, atol=1e-6)
  moved = max(float(np.max(np.abs(a - z))) for a, z in zip(
      jax.tree_util.tree_leaves(jax.device_get(state_f.params)), jax.tree_util.tree_leaves(p0)))
  diff = max(float(np.max(np.abs(a - z))) for a, z in zip(
      jax.tree_util.tree_leaves(jax.device_get(state_f.params)),
      jax.tree_util.tree_leaves(jax.device_get(state_u.params))))
  assert diff < 0.05 * moved, (diff, moved)  # same update up to float rounding


def test_benchmark_prints_only_finite_json_lines():
  """`launch.benchmark ... | jq` must work: stdout holds JSON lines and nothing else."""
  cmd = [sys.executable, "-m", "launch.benchmark",
         "--config=configs/benchmark.py:what=fused_vs_unfused,env=fake_reach",
         "--config.ratio_num_prompts=2", "--config.ratio_repeats=2"]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert p.returncode == 0, p.stderr[-2000:]
  rows = [json.loads(line) for line in p.stdout.splitlines()]  # every line parses
  assert len(rows) == 1
  row = rows[0]
  assert all(math.isfinite(v) for v in _numbers(row)), row
  assert row["bench"] == "fused_vs_unfused" and row["fused_unfused_ratio"] > 0
  assert row["fused_step_s_min"] <= row["fused_step_s"] <= row["fused_step_s_max"]
  assert row["compilation_cache"] is False  # compile times are not cache hits
  assert row["fused_mean_episode_length"] == row["unfused_mean_episode_length"]  # same episodes
  for key in ("git_commit", "load_avg_1m", "versions", "date", "fused_compile_s"):
    assert row.get(key) is not None, key


@pytest.mark.slow   # two compiles in a subprocess: about 60 s on 2 cores
def test_benchmark_train_sweep_over_meshes():
  """what=train sweeps the product of its tuples: one row per (mesh, chunk) on 8 fake devices, each
  saying its setting, every field finite (two settings: each is a compile)."""
  cmd = [sys.executable, "-m", "launch.benchmark", "--config=configs/benchmark.py:what=train",
         "--config.train_envs=('fake_reach',)", "--config.train_meshes=('8,1,1','1,4,2')",
         "--config.train_chunk_sizes=(2,)", "--config.train_prompts=(2,)",
         "--config.train_repeats=1"]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(
      os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert p.returncode == 0, p.stderr[-2000:]
  rows = [json.loads(line) for line in p.stdout.splitlines()]
  got = [((r["mesh"]["data"], r["mesh"]["fsdp"], r["mesh"]["tensor"]), r["chunk_size"]) for r in rows]
  assert got == [((8, 1, 1), 2), ((1, 4, 2), 2)], got
  for r in rows:
    assert r["bench"] == "train" and r["num_devices"] == 8 and r["num_prompts"] == 2
    assert r["trajectories_per_step"] == 2 * r["group_size"] and r["step_s"] > 0
    assert r["episode_length"] % r["chunk_size"] == 0
    assert all(math.isfinite(v) for v in _numbers(r)), r


def _numbers(x):
  if isinstance(x, dict):
    for v in x.values():
      yield from _numbers(v)
  elif isinstance(x, (int, float)) and not isinstance(x, bool):
    yield x
