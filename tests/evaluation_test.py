"""Evaluation helpers: Wilson intervals against hand values, the per-task / per-suite report, the
episode runner under jit (early stop, masking after the end, recorded frames) against a step-by-step
oracle, rollout GIFs and contact sheets, and the demonstration format's round trip."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from envs.fake import FakeReach
from vla_rl_jax import demos, evaluation, media


def test_wilson_interval_hand_values():
  # Wilson 95%: 5/10 -> 0.2366..0.7634; 0/10 -> 0..0.2775; 10/10 -> 0.7225..1; 45/50 -> 0.7864..0.9565
  for (k, n), (lo, hi) in {(5, 10): (0.2366, 0.7634), (0, 10): (0.0, 0.2775),
                           (10, 10): (0.7225, 1.0), (45, 50): (0.7864, 0.9565)}.items():
    got = evaluation.wilson(k, n)
    np.testing.assert_allclose(got, (lo, hi), atol=1e-4)
  assert evaluation.wilson(0, 0) == (0.0, 1.0)


class _Env:
  instructions = ("a", "b", "c")
  num_tasks = 3


def test_report_counts_per_task_and_suite():
  pairs = np.array([[0, 0], [0, 1], [0, 2], [2, 0], [2, 1]], np.int32)   # task 1 not evaluated
  success = np.array([1, 0, 1, 1, 1], bool)
  rep = evaluation.report(_Env(), pairs, success, np.array([10, 99, 30, 5, 7]), suite="s")
  assert [t["task_id"] for t in rep["tasks"]] == [0, 2]
  t0, t2 = rep["tasks"]
  assert (t0["episodes"], t0["successes"], t0["failed_states"]) == (3, 2, [1])
  assert t0["median_length_success"] == 20.0 and t2["success"] == 1.0
  np.testing.assert_allclose(t0["ci95"], evaluation.wilson(2, 3))
  s = rep["suites"]["s"]
  assert (s["episodes"], s["successes"], s["worst_task"]) == (5, 4, 2 / 3)
  json.dumps(rep)      # plain JSON


@pytest.fixture(scope="module")
def fake_run():
  env = FakeReach(image_size=8, start_noise=0.0)
  cand = jax.random.split(jax.random.PRNGKey(0), 32)
  tasks = np.asarray(jax.vmap(env.reset)(cand).obs["task_id"])
  keys = cand[np.concatenate([np.flatnonzero(tasks == 0)[:1], np.flatnonzero(tasks != 0)[:3]])]
  horizon = 9     # the expert needs 3 steps from the centre; one episode gets a broken expert

  def expert(s):
    a = env.expert_action(s)
    return jnp.where(s.obs["task_id"] == 0, -a, a)  # task 0: walks away, never succeeds
  out = evaluation.run_episodes(env, evaluation.expert_actor(expert), keys, horizon,
                                reset_fn=env.reset, calls_per_jit=4, video_env=env)
  return env, keys, expert, horizon, out


def test_run_episodes_matches_a_step_by_step_oracle(fake_run):
  env, keys, expert, horizon, out = fake_run
  for j, key in enumerate(keys):
    s = env.reset(key)
    frames, acts = [np.asarray(s.obs["image_agentview"])], []
    t = 0
    while t < horizon and not float(s.done):
      a = expert(s)
      s = env.step(s, a)
      acts.append(np.asarray(a))
      frames.append(np.asarray(s.obs["image_agentview"]))
      t += 1
    assert out["length"][j] == t and out["success"][j] == bool(s.info["success"])
    np.testing.assert_allclose(out["actions"][j, :t], np.stack(acts), atol=1e-6)
    assert np.all(out["actions"][j, t:] == 0)                       # masked after the end
    np.testing.assert_array_equal(out["frames"]["agentview"][j, :t + 1], np.stack(frames))
    after = out["frames"]["agentview"][j, t:]
    np.testing.assert_array_equal(after, np.broadcast_to(frames[-1], after.shape))
  # the runner stopped after the chunk in which the last episode ended (4 steps per jitted call)
  t_run = -(-int(out["length"].max()) // 4) * 4
  assert out["actions"].shape == (4, min(t_run, horizon), 2)
  assert out["proprio"].shape == (4, min(t_run, horizon) + 1, 2)
  tasks = np.asarray(jax.vmap(env.reset)(keys).obs["task_id"])
  assert np.array_equal(out["success"], tasks != 0) and 0 in tasks    # the check can fail


def test_gif_and_contact_sheet(tmp_path, fake_run):
  env, _, _, _, out = fake_run
  j = int(np.argmax(out["success"]))
  frames = media.episode_frames(out["frames"]["agentview"][j], int(out["length"][j]),
                                "reach the red target", True, upscale=8)
  path = media.write_gif(str(tmp_path / "v" / "ep.gif"), frames)
  with Image.open(path) as im:
    assert im.n_frames == int(out["length"][j]) + 1
    assert im.size == (64, 64 + media.CAPTION_H)
  sheet = media.contact_sheet(str(tmp_path / "sheet.png"), frames[:3], columns=2)
  with Image.open(sheet) as im:
    assert im.size == (128, 2 * (64 + media.CAPTION_H))


def test_demo_format_round_trip_and_errors(tmp_path):
  d = str(tmp_path)
  rng = np.random.default_rng(0)
  acts = rng.uniform(-1, 1, (5, 7)).astype(np.float32)
  imgs = {"agentview": rng.integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)}
  f = demos.write_episode(d, 3, 0, acts, imgs, np.zeros((6, 9), np.float32), seed=17)
  demos.write_manifest(d, {"instructions": ["x"] * 4, "episodes": [{"file": f, "task_id": 3}]})
  (ep,) = list(demos.episodes(d))
  np.testing.assert_array_equal(ep["actions"], acts)
  np.testing.assert_array_equal(ep["image_agentview"], imgs["agentview"])
  assert int(ep["task_id"]) == 3 and int(ep["seed"]) == 17 and ep["meta"]["file"] == f
  assert not [p for p in os.listdir(d) if "tmp" in p]
  with pytest.raises(ValueError, match="want u8"):
    demos.write_episode(d, 0, 1, acts, {"agentview": imgs["agentview"][:5]}, np.zeros((6, 9)), 0)
  with pytest.raises(FileNotFoundError, match="make_demos"):
    demos.read_manifest(str(tmp_path / "nothing"))


def test_policy_actor_runner_equals_the_training_rollout():
  """The episode runner driving the policy (videos, exact evaluation) and the fused rollout agree
  step for step under greedy decoding: same successes, same episode lengths."""
  from configs.default import get_config
  from vla_rl_jax import builders
  from vla_rl_jax import config as config_lib
  c = get_config("variant=tiny")
  c.env.kwargs.start_noise = 0.6       # a random policy ends some episodes early, not all
  cfg = config_lib.resolve(c.to_dict(), jax.device_count())
  b = builders.build(cfg)
  state, _ = b.init_fn()
  keys = jax.random.split(jax.random.PRNGKey(3), 16)
  ref = jax.device_get(evaluation.make_policy_eval_fn(b, keys, 0.0, reset_fn=b.env.reset)(state.params))
  out = evaluation.run_episodes(b.env, evaluation.policy_actor(b, state.params, 0.0), keys,
                                cfg.env.episode_length, reset_fn=b.env.reset, calls_per_jit=2)
  np.testing.assert_array_equal(out["length"], ref["length"])
  np.testing.assert_array_equal(out["success"], ref["success"] > 0)
  assert 0 < out["success"].sum() < 16 or len(set(out["length"].tolist())) > 1
  assert "grasped" not in ref and "grasped" not in out  # FakeReach reports no grasps


def test_run_episodes_in_batches_equals_one_batch(fake_run):
  """batch_size splits the episodes (last batch padded, stopping on its own) without changing any
  episode: same outcomes, actions and frames as the single batch."""
  env, keys, expert, horizon, out = fake_run
  split = evaluation.run_episodes(env, evaluation.expert_actor(expert), keys, horizon,
                                  reset_fn=env.reset, calls_per_jit=4, video_env=env, batch_size=3)
  for name in ("success", "length", "unstable"):
    np.testing.assert_array_equal(split[name], out[name])
  t = out["actions"].shape[1]
  np.testing.assert_array_equal(split["actions"][:, :t], out["actions"])
  assert np.all(split["actions"][:, t:] == 0)
  f = split["frames"]["agentview"]
  np.testing.assert_array_equal(f[:, :t + 1], out["frames"]["agentview"])


def test_report_names_the_suites_own_task_ids():
  """A task_ids subset renumbers tasks 0..n-1 inside the env; the report also gives each task's id
  in its suite, so `launch.eval --task_ids=2,5` reads back as tasks 2 and 5."""
  from envs.tasks.libero_suite import LiberoSuite
  env = LiberoSuite("libero_goal", cameras=(), task_ids=[2, 5])
  rep = evaluation.report(env, np.array([[0, 0], [1, 0], [1, 1]]), np.array([True, False, True]))
  assert [t["task_id"] for t in rep["tasks"]] == [0, 1]
  assert [t["suite_task_id"] for t in rep["tasks"]] == [2, 5]
  assert [t["successes"] for t in rep["tasks"]] == [1, 1]
  # the evaluation set: every (task, state) once; `states_per_task` keeps each task's first K
  full = evaluation.evaluation_set(env)
  assert full.shape == (2 * env.num_eval_states, 2) and len({tuple(p) for p in full}) == len(full)
  np.testing.assert_array_equal(evaluation.evaluation_set(env, 2),
                                [[0, 0], [0, 1], [1, 0], [1, 1]])
  with pytest.raises(ValueError, match="states_per_task=51"):
    evaluation.evaluation_set(env, env.num_eval_states + 1)
