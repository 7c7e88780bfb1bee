"""What the trainer prints: compile estimates, a progress line with rates, elapsed time and ETA, and
a warning when dynamic sampling leaves nothing to learn from."""

import json
import os
import re
import subprocess
import sys

import pytest

from configs.default import get_config
from vla_rl_jax import metrics as metrics_lib
from vla_rl_jax import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_console_says_what_it_does(tmp_path, capfd, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.train.num_steps, c.train.checkpoint_every, c.train.eval_every = 5, 5, 100
  c.train.eval_num_states = 8
  # moves of 1e-4 per action never reach a target 0.2 away: every group fails, none informs
  c.env.kwargs.step_size = 1e-4
  trainer.train_and_evaluate(c, str(tmp_path / "a"))
  out, err = capfd.readouterr()
  umask = os.umask(0)
  os.umask(umask)  # config.json is readable as the umask allows (mkstemp made it 0600)
  assert os.stat(tmp_path / "a" / "config.json").st_mode & 0o777 == 0o666 & ~umask
  assert "compiling the train step..." in out, out   # nothing measured yet on this machine
  lines = [line for line in out.splitlines() if line.startswith("[")]
  assert len(lines) == 5, out
  pattern = (r"^\[#+\.*\] step 5/5 \| success 0\.000 \| \d+ traj/s, [\d.]+[kM]? env steps/s \| "
             r"[\d.]+ s/step \| loss [+-][\d.]+ \| \d:\d\d:\d\d elapsed, ETA 0:00:00$")
  assert re.match(pattern, lines[-1]), lines[-1]
  assert re.search(r"ETA \d:\d\d:\d\d$", lines[0])
  assert err.count("warning: no informative groups in the last 5 steps (to step 5)") == 1, err
  # per-task success is named by instruction in metrics.jsonl and TensorBoard
  rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
  names = {"reach the red target", "reach the green target", "reach the blue target",
           "reach the yellow target"}
  train = [r for r in rows if r["kind"] == "train"]
  assert set(rows[0]["task_success"]) == names and set(train[-1]["task_success_ema"]) == names
  # no step applied an update (every group failed): the loss and entropy they log read 0.0 and are
  # no measurement, so the plotted series leave them out; what every step measures stays
  assert all(r["updates_applied"] == 0 and r["loss"] == 0.0 for r in train)
  assert metrics_lib.series(rows, "train", "loss") == ([], [])
  assert metrics_lib.series(rows, "train", "entropy") == ([], [])
  assert metrics_lib.series(rows, "train", "success_rate") == ([1, 2, 3, 4, 5], [0.0] * 5)
  assert metrics_lib.series(rows, "eval", "success_rate")[0] == [0, 5]
  tags = {v.tag for e in metrics_lib.read_tensorboard(str(tmp_path / "a" / "tb"))
          for v in e.summary.value}
  assert "train/task_success_ema/reach_the_red_target" in tags, tags  # TB: spaces -> _
  assert "eval/task_success/reach_the_blue_target" in tags, tags
  texts = [v.tensor.string_val[0].decode() for e in metrics_lib.read_tensorboard(
      str(tmp_path / "a" / "tb")) for v in e.summary.value if v.tag.startswith("config")]
  assert len(texts) == 1 and '"step_size": 0.0001' in texts[0], texts  # the resolved config
  # each evaluation logs a picture of its first held-out episode: 4 calls of 4 steps, 32 px frames
  # enlarged 3x side by side, over the instruction and the outcome
  import io
  import numpy as np
  from PIL import Image
  pics = [(e.step, v.image) for e in metrics_lib.read_tensorboard(str(tmp_path / "a" / "tb"))
          for v in e.summary.value if v.tag == "eval/rollout"]
  assert [step for step, _ in pics] == [0, 5], pics
  strip = np.asarray(Image.open(io.BytesIO(pics[-1][1].encoded_image_string)).convert("RGB"))
  assert strip.shape[1] == 4 * 96 and strip.shape[0] > 96, strip.shape
  tile = strip[:96, :96].astype(int)
  assert tile.std() > 10  # a rendered scene, not a blank
  assert (tile == np.repeat(np.repeat(tile[::3, ::3], 3, 0), 3, 1)).all()  # enlarged, not resampled
  trainer.train_and_evaluate(c, str(tmp_path / "b"))  # the same config again: it knows how long
  out, _ = capfd.readouterr()
  assert re.search(r"compiling the train step \(about \d+ s on this machine\)\.\.\.", out), out
  # launch.plot draws both runs side by side
  png = tmp_path / "runs.png"
  p = subprocess.run([sys.executable, "-m", "launch.plot", f"--workdir={tmp_path / 'a'}",
                      f"--workdir={tmp_path / 'b'}", f"--out={png}"], cwd=ROOT, capture_output=True,
                     text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert p.returncode == 0 and p.stdout.strip() == str(png), (p.stdout, p.stderr)
  import numpy as np
  from PIL import Image
  img = np.asarray(Image.open(png).convert("RGB")).astype(int)
  assert img.shape == (715, 1100, 3)
  for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's first two line colours
    assert (np.abs(img - rgb).sum(-1) < 30).sum() > 200, rgb
  p = subprocess.run([sys.executable, "-m", "launch.plot", f"--workdir={tmp_path}"], cwd=ROOT,
                     capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert p.returncode == 2 and p.stderr.startswith(f"launch.plot: --workdir={tmp_path}: holds no")


def _train(*args):
  return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)


def test_help_lists_the_choices_and_debug_shows_the_traceback(tmp_path):
  h = _train("--help").stdout
  for word in ("variant: tiny|small|base", "libero_goal", "ppo_clip", "rloo", "--config.env.kwargs",
               "gspo", "reinforce_pp", "dual_clip", "--config.rl.loss_kwargs",
               "--[no]debug"):
    assert word in h, word
  bad = ("--config=configs/default.py:variant=tiny", f"--workdir={tmp_path}", "--config.rl.group_size=1")
  p = _train(*bad)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  p = _train(*bad, "--debug")
  assert "Traceback" in p.stderr and "ConfigError: config.rl.group_size=1" in p.stderr, p.stderr


@pytest.mark.parametrize("module,args,line", [
    ("launch.eval", ["--policy=expert", "--env=libero_10", "--task_ids=9"],
     "launch.eval: no scripted expert for:"),
    ("launch.make_demos", ["--suite=libero_10", "--task_ids=9", "--out={tmp}/demos"],
     "launch.make_demos: no scripted expert for:"),
])
def test_eval_and_make_demos_debug_show_the_traceback(tmp_path, module, args, line):
  args = [a.format(tmp=tmp_path) for a in args]
  run = lambda *extra: subprocess.run([sys.executable, "-m", module, *args, *extra], cwd=ROOT,
                                      capture_output=True, text=True, timeout=300,
                                      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  p = run()   # the message, then one line per task without an expert; no traceback
  err = p.stderr.strip().splitlines()
  assert p.returncode == 2 and err[0] == line and "Traceback" not in p.stderr, p.stderr
  assert err[1:] == ["  task 0 'put the yellow and white mug in the microwave and close it': "
                     "in('white_yellow_mug_1', 'microwave_1_heating_region'): nothing is put "
                     "into a microwave yet (only its door is closed)"]
  p = run("--debug")
  assert p.returncode != 0 and "Traceback" in p.stderr and "ValueError" in p.stderr, p.stderr


def test_plot_draws_benchmark_sweeps_and_refuses_other_output(tmp_path):
  """launch.plot --bench: env throughput against num_envs, one colour per image size."""
  rows = []
  for size, scale in ((64, 2.0), (128, 1.0)):
    for b in (64, 256, 1024):
      r = {"bench": "env", "env": "libero_bowl_on_plate", "num_envs": b, "image_size": size,
           "device_kind": "cpu"}
      for sfx, f in (("", 1.0), ("_render", 0.7), ("_render_both", 0.5)):
        v = scale * f * 100 * b ** 0.5
        r.update({f"control_steps_per_s{sfx}": v, f"control_steps_per_s{sfx}_min": 0.9 * v,
                  f"control_steps_per_s{sfx}_max": 1.1 * v})
      rows.append(r)
  rows.append({"bench": "train", "env": "fake_reach"})  # other rows are ignored
  src = tmp_path / "env.jsonl"
  src.write_text("".join(json.dumps(r) + "\n" for r in rows))
  png = tmp_path / "env.png"
  run = lambda *a: subprocess.run([sys.executable, "-m", "launch.plot", *a], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ, JAX_PLATFORMS="cpu"))
  p = run(f"--bench={src}", f"--out={png}")
  assert p.returncode == 0 and p.stdout.strip() == str(png), (p.stdout, p.stderr)
  import numpy as np
  from PIL import Image
  img = np.asarray(Image.open(png).convert("RGB")).astype(int)
  for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # one colour per image size
    assert (np.abs(img - rgb).sum(-1) < 30).sum() > 200, rgb
  bad = tmp_path / "mixed.jsonl"
  bad.write_text(json.dumps(rows[0]) + "\nFailed to import warp\n")
  p = run(f"--bench={bad}")
  assert p.returncode == 2 and p.stderr.strip() == (
      f"launch.plot: --bench={bad}: line 2 is not JSON (benchmark output only)"), p.stderr
  only_train = tmp_path / "train.jsonl"
  only_train.write_text(json.dumps(rows[-1]) + "\n")
  p = run(f"--bench={only_train}")
  assert p.returncode == 2 and "no env benchmark rows" in p.stderr, p.stderr
