"""Pretraining tasks (envs/tasks/pretrain_tasks.py), their env libero_pretrain and launch.pretrain.

Default suite (no expert rollouts, no physics compile): the generator is deterministic, valid and
disjoint from LIBERO's 40 (checked against a hand-written list of the 40's goals, not the module's
own signature), its instructions fit model.max_text_len, the env builds with no camera and resets
under jit (num_steps_wait=0: kinematics only), its evaluation states are the generated ones, and
the pretraining config and the zero-shot suite config share every INIT_FIELDS value.
Slow (`make test-slow`): a tiny end-to-end launch.pretrain whose workdir initialises SFT.
"""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import registry
from envs.tasks import libero_data, pretrain_tasks
from envs.tasks.pretrain_tasks import check_disjoint, pretrain_specs

# LIBERO's 40 goals as (predicate, object category, holder category) for the pick-and-place ones,
# read off the task list by hand (libero_spatial: bowl on plate; libero_object: ten objects in the
# basket; libero_goal 6, 8; libero_10 0, 1, 4, 6, 7).
LIBERO_PICK_PLACE = {
    ("on", "akita_black_bowl", "plate"), ("on", "cream_cheese", "akita_black_bowl"),
    ("on", "porcelain_mug", "plate"), ("on", "white_yellow_mug", "plate"),
} | {("in", o, "basket") for o in (
    "alphabet_soup", "cream_cheese", "salad_dressing", "bbq_sauce", "ketchup", "tomato_sauce",
    "butter", "milk", "chocolate_pudding", "orange_juice")}


def _goal_triple(spec):
  assert len(spec.goal) == 1, spec.goal
  p = spec.goal[0]
  cat = {o.name: o.category for o in spec.objects}
  holder = p.args[1].removesuffix("_contain_region")
  return (p.name, cat[p.args[0]], cat[holder])


def test_generator_is_deterministic_and_prefix_stable():
  a, b = pretrain_specs(12, seed=3), pretrain_specs(12, seed=3)
  assert a == b
  assert pretrain_specs(5, seed=3) == a[:5]
  c = pretrain_specs(12, seed=4)
  assert [s.language for s in a] != [s.language for s in c]
  for s in (a[0], c[0]):
    st1, st2 = pretrain_tasks.init_states(s), pretrain_tasks.init_states(s)
    np.testing.assert_array_equal(st1["pose"], st2["pose"])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_tasks_are_valid(seed):
  specs = pretrain_specs(pretrain_tasks.MAX_TASKS, seed)
  assert len({s.language for s in specs}) == len(specs)
  assert [s.task_id for s in specs] == list(range(len(specs)))
  (ax0, ax1), (ay0, ay1) = pretrain_tasks.AREA
  for s in specs:
    assert s.suite == "libero_pretrain" and s.table == "table"
    assert 2 <= len(s.objects) <= 3
    op, obj, holder = _goal_triple(s)
    assert op == {"basket": "in"}.get(holder, "on")
    assert obj in pretrain_tasks.OBJECTS and holder in pretrain_tasks.HOLDERS and obj != holder
    # each object placed once, in its own region, regions inside the area and apart
    placed = [p.args[0] for p in s.init]
    assert sorted(placed) == sorted(o.name for o in s.objects)
    centres = []
    for o in s.objects:
      r = s.placement(o.name)
      assert ax0 - 0.03 <= r.x0 < r.x1 <= ax1 + 0.03 and ay0 - 0.03 <= r.y0 < r.y1 <= ay1 + 0.03
      centres.append(np.array(r.center))
    assert np.linalg.norm(centres[0] - centres[1]) >= pretrain_tasks.MIN_GAP[holder] - 1e-3
    # the instruction names the object and the holder
    assert pretrain_tasks.OBJECTS[obj] in s.language
    assert pretrain_tasks.HOLDERS[holder][2] in s.language


@pytest.mark.parametrize("seed", [0, 1, 2, 5, 11])
def test_disjoint_from_the_40(seed):
  langs40 = {t.language for s in libero_data.SUITES for t in libero_data.tasks(s)}
  for s in pretrain_specs(pretrain_tasks.MAX_TASKS, seed):
    assert s.language not in langs40
    assert _goal_triple(s) not in LIBERO_PICK_PLACE, s.language


def test_check_disjoint_refuses_one_of_the_40():
  ours = pretrain_specs(4, 0)[0]
  bowl = libero_data.tasks("libero_spatial")[0]
  with pytest.raises(ValueError, match="repeats LIBERO's libero_spatial task 0"):
    check_disjoint([dataclasses.replace(ours, language=bowl.language)])
  ketchup = libero_data.tasks("libero_object")[4]   # same goal, our wording and layout
  spec = dataclasses.replace(ours, objects=ketchup.objects, goal=ketchup.goal,
                             language="grab the ketchup and drop it in the basket")
  with pytest.raises(ValueError, match="libero_object task 4"):
    check_disjoint([spec])


def test_bad_num_tasks():
  for n in (0, pretrain_tasks.MAX_TASKS + 1):
    with pytest.raises(ValueError, match="num_tasks"):
      pretrain_specs(n)


def test_instructions_fit_the_model_text():
  from configs import pretrain
  from vla_rl_jax.models import tokenizer
  max_len = pretrain.get_config().model.max_text_len
  for seed in range(4):
    texts = [s.language for s in pretrain_specs(pretrain_tasks.MAX_TASKS, seed)]
    table = tokenizer.encode_all(texts, max_len)
    assert table.shape == (len(texts), max_len)


@pytest.fixture(scope="module")
def env():
  return registry.make("libero_pretrain", image_size=16, cameras=(), num_tasks=3, seed=0,
                       num_steps_wait=0)


@pytest.fixture(scope="module")
def resets(env):
  """One jit: a training reset, an evaluation reset and reset_to(task, index) per key."""
  def f(key, task, index):
    return env.reset(key), env.eval_reset(key), env.reset_to(task, index)
  fn = jax.jit(jax.vmap(f))
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  tasks = jnp.array([0, 1, 2, 0, 1, 2])
  idx = jnp.array([0, 3, 7, 49, 10, 20])
  return fn(keys, tasks, idx), (tasks, idx)


def test_env_options_and_expert_cover_every_task(env):
  from envs.tasks import experts
  assert env.num_tasks == 3 and env.cameras == ()
  assert list(env.instructions) == [s.language for s in pretrain_specs(3, 0)]
  assert experts.supported(env) == [True] * 3
  assert registry.check_kwargs("libero_pretrain", {})["num_tasks"] == 8
  with pytest.raises(ValueError, match="num_tasks"):
    registry.check_kwargs("libero_pretrain", {"num_tasks": 0})
  with pytest.raises(ValueError, match="task_ids"):
    registry.check_kwargs("libero_pretrain", {"task_ids": (0,)})


def _obj_xy(env, state, name):
  a = env._obj_qadr[name]   # noqa: SLF001
  return np.asarray(state.pipeline_state.qpos[..., a:a + 2])


def test_resets_under_jit(env, resets):
  (train, ev, exact), (tasks, idx) = resets
  for s in (train, ev, exact):
    assert np.isfinite(np.asarray(s.pipeline_state.qpos)).all()
    assert not np.asarray(s.info["success"]).any()
    assert set(np.asarray(s.obs["task_id"]).tolist()) <= {0, 1, 2}
  np.testing.assert_array_equal(np.asarray(exact.info["task"]), np.asarray(tasks))
  specs = env.specs
  for j, (k, i) in enumerate(zip(np.asarray(tasks), np.asarray(idx))):
    st = pretrain_tasks.init_states(specs[k])
    for e, name in enumerate(st["entities"]):
      # reset_to gives the generated evaluation state exactly (no warm-up here)
      np.testing.assert_allclose(_obj_xy(env, exact, name)[j], st["pose"][i, e, :2], atol=1e-5)
    for s in (train, ev):
      kk = int(np.asarray(s.info["task"])[j])
      st = pretrain_tasks.init_states(specs[kk])
      for e, name in enumerate(st["entities"]):
        r = specs[kk].placement(name)
        x, y = _obj_xy(env, s, name)[j]
        assert r.x0 - 1e-4 <= x <= r.x1 + 1e-4 and r.y0 - 1e-4 <= y <= r.y1 + 1e-4, (kk, name)
      # a training layout is a fresh draw, never one of the evaluation states
      if s is train:
        xy = np.stack([_obj_xy(env, s, n)[j] for n in st["entities"]])
        d = np.abs(st["pose"][:, :, :2] - xy[None]).max(axis=(1, 2))
        assert d.min() > 1e-4


def test_zero_shot_config_shares_the_model():
  from configs import pretrain
  from vla_rl_jax.pretrain import suite_config
  from vla_rl_jax import config as config_lib
  c = pretrain.get_config("num_tasks=4")
  c.sft.demos = "unused"
  src = config_lib.resolve(c)
  saved = json.loads(config_lib.dumps(src))
  for suite in libero_data.SUITES:
    cfg = config_lib.resolve(suite_config(c, suite, "/tmp/x"))
    assert cfg.env.name == suite and cfg.train.init_from == "/tmp/x"
    assert config_lib.init_conflicts(saved, cfg) == []


@pytest.mark.slow
def test_pretrain_end_to_end_then_sft_from_it(tmp_path):
  """launch.pretrain on 2 tasks x 1 demonstration, a few SFT steps; then launch.sft on
  libero_spatial's task 0 demonstrations starts from its parameters (train.init_from)."""
  env = {**os.environ, "PYTHONPATH": os.getcwd()}
  wd = tmp_path / "pre"
  r = subprocess.run([sys.executable, "-m", "launch.pretrain", f"--workdir={wd}", "--num_tasks=2",
                      "--demos_per_task=1", "--batch=2", "--config.sft.num_steps=4",
                      "--config.sft.batch_size=8", "--config.sft.log_every=2", "--debug"],
                     capture_output=True, text=True, env=env, timeout=3000)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "demonstrations of" in r.stdout and (wd / "config.json").exists()
  demos = tmp_path / "demos"
  r = subprocess.run([sys.executable, "-m", "launch.make_demos", "--suite=libero_spatial",
                      "--task_ids=0", "--per_task=1", "--image_size=32", "--cameras=agentview",
                      f"--out={demos}", "--batch=2"], capture_output=True, text=True, env=env,
                     timeout=3000)
  assert r.returncode == 0, r.stderr[-3000:]
  r = subprocess.run([sys.executable, "-m", "launch.sft",
                      "--config=configs/libero_sft.py:suite=libero_spatial,variant=tiny",
                      f"--workdir={tmp_path / 'sft'}", f"--config.sft.demos={demos}",
                      "--config.env.kwargs.task_ids=(0,)", "--config.sft.num_steps=2",
                      "--config.sft.batch_size=8", f"--config.train.init_from={wd}", "--debug"],
                     capture_output=True, text=True, env=env, timeout=3000)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "parameters from" in r.stdout + r.stderr
