"""Nothing lost, nothing poisoned: the non-finite guard, verified checkpoints with fallback, the
workdir lock, metrics exact across resume. Each test reproduces a failure a careful user hit."""

import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import checkpoint as ckpt_lib
from vla_rl_jax import metrics as metrics_lib
from vla_rl_jax import trainer
from vla_rl_jax.builders import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a failed tensorstore read leaves its sibling reads to finish on a closed event loop
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
HUGE_LR = 3.4e38  # the reproduction: the policy collapses, every group is dropped


def config(num_steps, **optim):
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.train.num_steps, c.train.checkpoint_every, c.train.keep_checkpoints = num_steps, 1, 3
  c.train.eval_every, c.train.eval_num_states = 100, 8
  for k, v in optim.items():
    c.optim[k] = v
  return c


def restore_all(workdir):
  """{step: state} of every checkpoint, each verified (digests, finiteness)."""
  b = build(ckpt_lib.read_config(workdir, jax.device_count()))
  ck = ckpt_lib.Checkpointer(workdir, 3)
  out = {s: ck.restore(s, *b.abstract_state, b.state_shardings, b.env_stats_shardings)[0]
         for s in ck.all_steps()}
  ck.close()
  return out


def all_finite(state):
  return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(
      (state.params, state.opt_state)) if np.issubdtype(np.asarray(x).dtype, np.floating))


def test_nonfinite_parameters_stop_the_run_and_the_advice_resumes_it(tmp_path):
  work = str(tmp_path / "run")
  trainer.train_and_evaluate(config(2), work, quiet=True)
  # the learning rate explodes the weights while every group is dropped, so loss and grad_norm
  # read 0.0: only the parameters themselves tell
  with pytest.raises(metrics_lib.NonFiniteError) as e:
    trainer.train_and_evaluate(config(6, learning_rate=HUGE_LR), work, quiet=True)
  msg = str(e.value)
  assert "train step 3" in msg and "non-finite values in the parameters" in msg, msg
  assert "newest checkpoint (step 2) is intact" in msg and "learning_rate" in msg, msg
  states = restore_all(work)
  assert sorted(states) == [1, 2] and all(all_finite(s) for s in states.values())
  # the advice works: the same workdir resumes from step 2 with a lower learning rate
  out = trainer.train_and_evaluate(config(4, learning_rate=3e-3), work, quiet=True)
  assert [r["step"] for r in out["train"]] == [3, 4]
  assert all_finite(out["final_state"])


def test_collapsed_run_exits_nonzero_with_one_line_and_saves_nothing(tmp_path):
  # the exact command: it exited 0 with 150 non-finite parameters in checkpoints 4-6
  work = tmp_path / "w"
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  p = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
                      f"--workdir={work}", f"--config.optim.learning_rate={HUGE_LR}",
                      "--config.rl.minibatch_size=128", "--config.train.num_steps=6",
                      "--config.train.checkpoint_every=1"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 1, p.stdout + p.stderr
  errors = [line for line in p.stderr.splitlines() if line.startswith("launch.train:")]
  assert len(errors) == 1 and "non-finite values in the parameters" in errors[0], p.stderr
  assert "Traceback" not in p.stderr and "can't create new thread" not in p.stderr, p.stderr
  assert not glob.glob(str(work / "checkpoints" / "[0-9]*"))
  assert not (work / "LOCK").exists()
  rows = [json.loads(line) for line in open(work / "metrics.jsonl")]  # strict JSON throughout
  assert rows[-1]["nonfinite_state"] > 0
  ev = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={work}", "--num_states=8"],
                      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert ev.returncode != 0 and "no complete checkpoint" in ev.stderr, ev.stderr


def _largest_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def test_corrupt_checkpoints_are_detected_and_skipped(tmp_path):
  ref = trainer.train_and_evaluate(config(6), str(tmp_path / "ref"), quiet=True)
  work = str(tmp_path / "run")
  trainer.train_and_evaluate(config(4), work, quiet=True)  # checkpoints 2, 3, 4
  ck = os.path.join(work, "checkpoints")
  # 4: one flipped bit in the largest data file (storage returns it without complaint)
  f = _largest_file(os.path.join(ck, "4"))
  data = bytearray(open(f, "rb").read())
  data[len(data) // 2] ^= 0x10
  open(f, "wb").write(bytes(data))
  # 3: a data file cut short
  f = _largest_file(os.path.join(ck, "3"))
  data = open(f, "rb").read()
  open(f, "wb").write(data[:len(data) // 3])
  warnings = []
  b = build(ckpt_lib.read_config(work, jax.device_count()))
  found = ckpt_lib.Checkpointer(work, 3).restore_latest(
      *b.abstract_state, b.state_shardings, b.env_stats_shardings, warn=warnings.append)
  assert found[0] == 2, warnings
  # the flipped bit lands in zstd-compressed data: what it decodes to varies (a wrong value, a
  # non-finite one, or no valid stream), and each is caught; the digest path alone is checked below
  assert len(warnings) == 2 and warnings[0].startswith("skipping checkpoint 4 "), warnings
  assert any(why in warnings[0] for why in ("does not match the digests", "non-finite values",
                                            "cannot be read")), warnings
  assert "checkpoint 3 cannot be read" in warnings[1], warnings
  # evaluating a corrupt checkpoint by its step is refused with one line
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  ev = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={work}", "--step=4",
                       "--num_states=8"], cwd=ROOT, env=env, capture_output=True, text=True,
                      timeout=300)
  assert ev.returncode == 2 and ev.stderr.startswith("launch.eval: checkpoint 4 "), ev.stderr
  assert "Traceback" not in ev.stderr
  # the trainer resumes from 2, sets 3 and 4 aside (kept), and ends where an uninterrupted run ends
  out = trainer.train_and_evaluate(config(6), work, quiet=True)
  assert [r["step"] for r in out["train"]] == [3, 4, 5, 6]
  assert len(os.listdir(os.path.join(work, "checkpoints.rejected"))) == 2
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                         out["final_state"].params, ref["final_state"].params)


def test_a_deleted_file_and_digests_of_another_save_are_detected(tmp_path):
  work = str(tmp_path / "run")
  trainer.train_and_evaluate(config(3), work, quiet=True)
  ck = os.path.join(work, "checkpoints")
  os.remove(_largest_file(os.path.join(ck, "3")))
  # 2's arrays under 1's digests: files from different saves mixed up
  shutil.rmtree(os.path.join(ck, "2", "checksums"))
  shutil.copytree(os.path.join(ck, "1", "checksums"), os.path.join(ck, "2", "checksums"))
  warnings = []
  b = build(ckpt_lib.read_config(work, jax.device_count()))
  found = ckpt_lib.Checkpointer(work, 3).restore_latest(
      *b.abstract_state, b.state_shardings, b.env_stats_shardings, warn=warnings.append)
  assert found[0] == 1, warnings
  assert "checkpoint 3 cannot be read" in warnings[0] and "does not match" in warnings[1], warnings
  # nothing verifies: a clear error, never a silent fresh start over the old run
  shutil.rmtree(os.path.join(ck, "1", "state"))
  with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint under .* verifies"):
    trainer.train_and_evaluate(config(3), work, quiet=True)


def test_a_second_trainer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capfd):
  work = tmp_path / "w"
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  holder = subprocess.Popen(
      [sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
        f"--workdir={work}", "--config.train.num_steps=100000",
       "--config.train.checkpoint_every=100000", "--config.train.eval_every=100000"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while not (work / "LOCK").exists():
      assert holder.poll() is None and time.time() < deadline
      time.sleep(0.1)
    with pytest.raises(ckpt_lib.WorkdirLockedError) as e:
      trainer.train_and_evaluate(config(1), str(work), quiet=True)
    assert f"pid {holder.pid}" in str(e.value) and "in use by another run" in str(e.value)
    second = subprocess.run([sys.executable, "-m", "launch.train",
                             "--config=configs/default.py:variant=tiny", f"--workdir={work}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and "in use by another run" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert (work / "LOCK").exists()  # a SIGKILL leaves it behind
  c = get_config("variant=tiny")   # the holder's config, resumed or started: same config.json
  c.train.num_steps = 1
  capfd.readouterr()
  trainer.train_and_evaluate(c, str(work), quiet=True)
  assert "taking over the lock of a run that is no longer running" in capfd.readouterr().err
  assert not (work / "LOCK").exists()


def test_lock_of_another_host_is_never_broken(tmp_path):
  (tmp_path / "LOCK").write_text(json.dumps({"host": "some-other-host", "pid": 1, "started": 0}))
  with pytest.raises(ckpt_lib.WorkdirLockedError, match="on another host.*delete"):
    ckpt_lib.WorkdirLock(str(tmp_path)).acquire()


def test_metrics_resume_drops_later_rows_and_writes_strict_json(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": 0, "kind": "eval"}, {"step": 1, "kind": "train"}, {"step": 2, "kind": "train"},
          {"step": 2, "kind": "eval"}, {"step": 3, "kind": "train"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "ki')  # cut by a kill
  w = metrics_lib.Writer(str(tmp_path), 10, tensorboard=False, start_step=2)
  assert w.dropped_eval_at_start  # the trainer evaluates step 2 again
  w.write(3, {"loss": float("nan"), "x": [1.0, float("inf")]})
  w.close()
  text = path.read_text()
  got = [json.loads(line) for line in text.splitlines()]  # every line parses: no cut line
  assert [(r["step"], r["kind"]) for r in got] == [(0, "eval"), (1, "train"), (2, "train"),
                                                   (3, "train")]
  assert "NaN" not in text and "Infinity" not in text
  assert got[-1]["loss"] is None and got[-1]["x"] == [1.0, None]


def test_tensorboard_segment_purges_steps_after_the_resume(tmp_path):
  for start, steps in ((0, range(1, 6)), (3, range(4, 7))):  # killed after 5, resumed from 3
    w = metrics_lib.Writer(str(tmp_path), 10, start_step=start)
    for s in steps:
      w.write(s, {"loss": float(s + 10 * start)})
    w.close()
    time.sleep(1.1)  # event file names carry the second they were opened
  # TensorBoard's rule: a SessionLog.START at step p hides the earlier events with step >= p
  curve = []
  for e in metrics_lib.read_tensorboard(str(tmp_path / "tb")):
    if e.HasField("session_log") and e.session_log.status == e.session_log.START:
      curve = [(s, v) for s, v in curve if s < e.step]
    for v in e.summary.value:
      if v.tag == "train/loss":
        curve.append((e.step, v.simple_value))
  assert curve == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 34.0), (5, 35.0), (6, 36.0)], curve


def test_run_past_its_num_steps_is_refused(tmp_path):
  work = str(tmp_path / "run")
  trainer.train_and_evaluate(config(3), work, quiet=True)
  with pytest.raises(ValueError, match=r"num_steps=2 is below the step 3 restored"):
    trainer.train_and_evaluate(config(2), work, quiet=True)


def test_resume_may_change_the_learning_rate_but_not_the_optimiser_structure(tmp_path):
  from vla_rl_jax import config as config_lib
  base = config_lib.resolve(config(2), 8)
  saved = config_lib.to_dict(base)
  lower = config_lib.resolve(config(2, learning_rate=1e-4, grad_clip=0.5), 8)
  assert config_lib.resume_conflicts(saved, lower) == []
  assert config_lib.resume_changes(saved, lower) == ["optim.learning_rate: 0.003 -> 0.0001",
                                                     "optim.grad_clip: 1.0 -> 0.5"]
  no_clip = config_lib.resolve(config(2, grad_clip=0.0), 8)
  assert config_lib.resume_conflicts(saved, no_clip) == [
      "optim (grad_clip/warmup_steps switched on or off)"]
  assert math.isfinite(lower.optim.learning_rate)


def test_a_run_saved_before_env_options_were_recorded_still_resumes():
  from vla_rl_jax import config as config_lib
  cfg = config_lib.resolve(config(2), 8)
  saved = config_lib.to_dict(cfg)
  saved["env"]["kwargs"] = {"radius": saved["env"]["kwargs"]["radius"]}  # defaults not written
  assert config_lib.resume_conflicts(saved, cfg) == []
  saved["env"]["kwargs"]["radius"] = 0.2
  assert config_lib.resume_conflicts(saved, cfg) == ["env"]
