"""Save, kill, resume: the resumed run takes exactly the steps an uninterrupted run takes."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from configs.default import get_config
from vla_rl_jax import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10
ARGS = ["--config.rl.num_prompts=8", "--config.rl.group_size=4", "--config.rl.minibatch_size=16",
        f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=2",
        "--config.train.eval_every=100", "--config.train.eval_num_states=8"]


def config():
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.train.num_steps, c.train.checkpoint_every = STEPS, 2
  c.train.eval_every, c.train.eval_num_states = 100, 8
  return c


def train_rows(workdir):
  """The train rows by step; each step must be logged exactly once, even across kills."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [(r["kind"], r["step"]) for r in rows]
  assert len(steps) == len(set(steps)), f"duplicated metric rows: {steps}"
  return {r["step"]: r for r in rows if r["kind"] == "train"}


def launch(workdir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8")
  return subprocess.Popen([sys.executable, "-m", "launch.train",
                           "--config=configs/default.py:variant=tiny", f"--workdir={workdir}", *ARGS],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


KEYS = ("success_rate", "loss", "grad_norm", "entropy", "episode_length", "valid_group_frac")


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
  assert jax.device_count() == 8
  ref = trainer.train_and_evaluate(config(), str(tmp_path / "ref"), quiet=True)
  ref_rows = {r["step"]: r for r in ref["train"]}

  work = tmp_path / "killed"
  proc = launch(work)
  deadline = time.time() + 300
  while not (work / "checkpoints" / "2").exists():  # a complete checkpoint exists (renamed)
    assert proc.poll() is None, proc.stdout.read()
    assert time.time() < deadline
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # A save that died half-way leaves only a temporary directory behind: it must be ignored.
  (work / "checkpoints" / "4.orbax-checkpoint-tmp-1234567").mkdir()
  (work / "checkpoints" / "4.orbax-checkpoint-tmp-1234567" / "garbage").write_text("x")

  proc = launch(work)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  resumed = int(out.split("resumed from step ")[1].split()[0])
  assert 2 <= resumed < STEPS, f"the kill did not land mid-run (resumed at {resumed})"
  # the killed run's lock (same host, dead pid) is taken over, and released at the end
  assert "taking over the lock of a run that is no longer running" in out, out
  assert not (work / "LOCK").exists()
  rows = train_rows(work)
  assert sorted(rows) == list(range(1, STEPS + 1))
  for s in range(1, STEPS + 1):
    for k in KEYS:
      np.testing.assert_allclose(rows[s][k], ref_rows[s][k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {s} {k}")
  # and the final weights are the uninterrupted run's
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax.builders import build
  b = build(ckpt_lib.read_config(str(work), jax.device_count()))
  final, _, _ = ckpt_lib.Checkpointer(str(work), 3).restore(STEPS, *b.abstract_state,
                                                          b.state_shardings, b.env_stats_shardings)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                                 rtol=1e-5, atol=1e-7),
                         final.params, ref["final_state"].params)
  # launch.eval rebuilds the model from the saved config alone and evaluates the last checkpoint
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")  # another topology
  # (with videos: fake_reach has no finite evaluation set, so held-out draws are filmed)
  ev = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={work}", "--num_states=8",
                       f"--video_dir={tmp_path / 'videos'}", "--num_videos=2", "--video_size=32"],
                      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr
  result = json.loads(ev.stdout[ev.stdout.index("{"):])
  assert result["step"] == STEPS and 0.0 <= result["success_rate"] <= 1.0
  assert len(result["videos"]) == 2 and all(os.path.getsize(p) > 0 for p in result["videos"])
  assert all(os.path.basename(p).startswith(f"episode{j:02d}_task")
             for j, p in enumerate(result["videos"]))
  assert os.path.getsize(result["contact_sheet"]) > 0
  assert set(result["task_success"]) == {"reach the red target", "reach the green target",
                                         "reach the blue target", "reach the yellow target"}
  # the resolved config sits beside the checkpoints and rebuilds the same run
  saved = json.loads((work / "config.json").read_text())
  assert saved["rl"]["group_size"] == 4 and saved["mesh"]["data"] == 8


def test_resume_refuses_a_different_config(tmp_path):
  c = config()
  c.train.num_steps = 2
  trainer.train_and_evaluate(c, str(tmp_path), quiet=True)
  c.rl.clip_high = 0.2
  try:
    trainer.train_and_evaluate(c, str(tmp_path), quiet=True)
    raise AssertionError("expected a ConfigError")
  except ValueError as e:
    assert "different config in ['rl']" in str(e), str(e)
