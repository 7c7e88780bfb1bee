"""`make demo`: GRPO end to end on a CPU, printing held-out success before and after RL.

  python -m launch.demo [--workdir=DIR] [--rl_steps=8] [--sft_steps=300] [--pretrained=DIR]
      [--env=libero_bowl_on_plate]   # `make demo`: the paper's pipeline on LIBERO-MJX (~25 min)
  python -m launch.demo --task=fake   # GRPO from scratch on the fake pixel task (a minute)

task=fake: a randomly initialised tiny VLA, GRPO with the paper's tricks (clip-higher, dynamic
sampling, temperature 1.6), greedy evaluation on held-out initial states before and after.

task=libero (the default): stages (each the launcher a user runs, started as its own process,
command printed):
  1. the pretrained checkpoint: --pretrained (default: the one the package ships,
     vla_rl_jax/assets/pretrained/tiny: behaviour cloning on procedural tabletop tasks that are
     none of LIBERO's 40, built by `launch.pretrain`; README "Pretraining" has its command);
  2. one scripted-expert demonstration of the task (`launch.make_demos`);
  3. SFT on that one demonstration from the pretrained parameters (`launch.sft`);
  4. GRPO from the SFT checkpoint with the paper's tricks (`launch.train`, configs/libero_grpo.py:
     clip 0.2 / 0.28, dynamic sampling; the tiny variant's temperature 1.0, the file says why),
     evaluated greedily on the same held-out initial states before the first RL step and after
     the last;
  5. the before/after table, a success-versus-step plot (`launch.plot`) and rollout videos of the
     final policy (`launch.eval --video_dir`).

Everything lands in --workdir: demos/, sft/, rl/ (metrics.jsonl, checkpoints, tensorboard),
plot.png, videos/, result.json.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from launch.common import check_workdir, fail, parse_flags

PROG = "launch.demo"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "vla_rl_jax", "assets", "pretrained", "tiny")
TASKS = ("libero", "fake")

_TASK = flags.DEFINE_enum("task", "libero", TASKS, "libero: pretrained -> one-demonstration SFT -> "
                          "GRPO on libero_bowl_on_plate; fake: GRPO from scratch on the fake pixel "
                          "task (about a minute).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write the run (default: a fresh temp dir).")
_ENV = flags.DEFINE_string("env", "libero_bowl_on_plate", "LIBERO-MJX env (task=libero).")
_PRETRAINED = flags.DEFINE_string("pretrained", SHIPPED, "launch.pretrain workdir to start from.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "SFT steps on the one demonstration.")
_RL_STEPS = flags.DEFINE_integer("rl_steps", 8, "GRPO steps (task=fake: 60 by default).")
_PROMPTS = flags.DEFINE_integer("num_prompts", 4, "Initial states per GRPO step (x 8 rollouts).")
_EVAL_STATES = flags.DEFINE_integer("eval_states", 64, "Held-out initial states evaluated before "
                                    "and after RL.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the demonstration, SFT and RL.")
_VIDEOS = flags.DEFINE_integer("num_videos", 2, "Rollout videos of the final policy.")


def _run(stage: str, args: list[str], log_path: str) -> float:
  """Runs `python -m <args>` as its own process (its output to the console and `log_path`);
  exits with the stage named when it fails."""
  cmd = [sys.executable, "-m", *args]
  print(f"\n[{stage}] {' '.join(shlex.quote(a) for a in cmd[2:])}", flush=True)
  t0 = time.time()
  with open(log_path, "w") as log:
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
      sys.stdout.write("  " + line)
      sys.stdout.flush()
      log.write(line)
    rc = p.wait()
  if rc:
    fail(PROG, f"stage '{stage}' failed (exit {rc}); its output is in {log_path}")
  dt = time.time() - t0
  print(f"[{stage}] done in {dt:.0f} s", flush=True)
  return dt


def _eval_rows(rl_dir: str) -> list[dict]:
  from vla_rl_jax import metrics  # noqa: PLC0415
  return [r for r in metrics.read_rows(os.path.join(rl_dir, metrics.Writer.FILE))
          if r.get("kind") == "eval"]


def _check_pretrained(path: str) -> None:
  from vla_rl_jax.checkpoint import CONFIG_FILE  # noqa: PLC0415
  if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
    fail(PROG, f"--pretrained={path}: no config.json there (not a launch.pretrain workdir); build "
               f"one with: python -m launch.pretrain --workdir={path} (README 'Pretraining')")


def libero_demo(workdir: str) -> dict:
  env = _ENV.value
  pre = os.path.abspath(_PRETRAINED.value)
  _check_pretrained(pre)
  d = lambda *p: os.path.join(workdir, *p)  # noqa: E731
  logs = d("logs")
  os.makedirs(logs, exist_ok=True)
  seconds = {}
  print(f"demo: {env}: pretrained {pre} -> 1 demonstration -> SFT ({_SFT_STEPS.value} steps) -> "
        f"GRPO ({_RL_STEPS.value} steps of {_PROMPTS.value} x 8 rollouts) -> held-out evaluation "
        f"on {_EVAL_STATES.value} states; workdir {workdir}", flush=True)
  if not os.path.exists(d("demos", "manifest.json")):
    seconds["demonstration"] = _run("demonstration", [
        "launch.make_demos", f"--suite={env}", "--per_task=1", "--image_size=32",
        "--cameras=agentview", f"--seed={_SEED.value}", "--batch=4", f"--out={d('demos')}"],
        d("logs", "make_demos.log"))
  sft_cfg = f"configs/libero_sft.py:suite={env},demos_per_task=1,variant=tiny"
  seconds["sft"] = _run("sft", [
      "launch.sft", f"--config={sft_cfg}", f"--workdir={d('sft')}",
      f"--config.sft.demos={d('demos')}", f"--config.train.init_from={pre}",
      f"--config.sft.num_steps={_SFT_STEPS.value}", f"--config.seed={_SEED.value}",
      f"--config.sft.checkpoint_every={_SFT_STEPS.value}"], d("logs", "sft.log"))
  rl_cfg = f"configs/libero_grpo.py:suite={env},variant=tiny,init_from={d('sft')}"
  seconds["rl"] = _run("grpo", [
      "launch.train", f"--config={rl_cfg}", f"--workdir={d('rl')}",
      f"--config.train.num_steps={_RL_STEPS.value}", f"--config.train.eval_every={_RL_STEPS.value}",
      f"--config.train.eval_num_states={_EVAL_STATES.value}",
      # two optimiser steps per RL step (num_prompts x 8 trajectories in halves)
      f"--config.rl.num_prompts={_PROMPTS.value}", f"--config.rl.minibatch_size={_PROMPTS.value * 4}",
      f"--config.train.checkpoint_every={_RL_STEPS.value}", "--config.train.log_every=1",
      f"--config.seed={_SEED.value}"], d("logs", "train.log"))
  seconds["plot"] = _run("plot", ["launch.plot", f"--workdir={d('rl')}", f"--out={d('plot.png')}"],
                         d("logs", "plot.log"))
  if _VIDEOS.value:
    seconds["videos"] = _run("videos", [
        "launch.eval", f"--workdir={d('rl')}", f"--num_states={_VIDEOS.value}",
        f"--num_videos={_VIDEOS.value}", f"--video_dir={d('videos')}", f"--out={d('videos.json')}"],
        d("logs", "videos.log"))
  rows = _eval_rows(d("rl"))
  before, after = rows[0], rows[-1]
  return {"env": env, "pretrained": pre, "before": before, "after": after, "seconds": seconds}


def _row(label: str, r: dict, n: int) -> str:
  s = r["success_rate"]
  # the share of successes reached by pushing: none to share out when nothing succeeded
  pushed = r.get("successes_pushed_frac") if s > 0 else None
  cell = f"{s:.3f} ({round(s * n)}/{n})"
  return (f"| {label:<26} | {int(r['step']):>4} | {cell:<16} | "
          f"{r.get('episode_length', float('nan')):6.1f} | "
          f"{'-' if pushed is None else f'{pushed:.2f}':>6} |")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="vla_rl_jax_demo_")
  check_workdir(PROG, workdir)
  for name, lo, hi in (("sft_steps", 1, 100_000), ("rl_steps", 1, 100_000), ("num_prompts", 1, 1024),
                       ("eval_states", 1, 100_000), ("num_videos", 0, 64), ("seed", 0, 2**31 - 1)):
    v = flags.FLAGS[name].value
    if not lo <= v <= hi:
      fail(PROG, f"--{name}={v}: must be in [{lo}, {hi}]")
  if _TASK.value == "fake":
    return fake_demo(workdir)
  from envs import registry  # noqa: PLC0415
  if not _ENV.value.startswith("libero") or _ENV.value not in registry.names():
    fail(PROG, f"--env={_ENV.value}: not a LIBERO-MJX env; registered: {list(registry.names())}")
  t0 = time.time()
  out = libero_demo(workdir)
  out["wall_s"] = time.time() - t0
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(out, f, indent=1, default=float)
  n = _EVAL_STATES.value
  print(f"\n=== {out['env']}: greedy success on {n} held-out initial states ===")
  print("| policy                     | step | success          | length | pushed |")
  print("|----------------------------|------|------------------|--------|--------|")
  print(_row("1-demo SFT (before RL)", out["before"], n))
  print(_row("1-demo SFT + GRPO (after)", out["after"], n))
  print(f"wall time {out['wall_s'] / 60:.1f} min ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in out["seconds"].items()) + ")")
  print(f"plot {os.path.join(workdir, 'plot.png')}; videos {os.path.join(workdir, 'videos')}; "
        f"metrics {os.path.join(workdir, 'rl', 'metrics.jsonl')}")


def fake_demo(workdir: str) -> None:
  """A randomly initialised tiny VLA, GRPO on the fake pixel task, greedy held-out success before
  and after (about a minute on 2 cores)."""
  from configs.default import get_config  # noqa: PLC0415
  from vla_rl_jax import trainer  # noqa: PLC0415
  cfg = get_config("variant=tiny")
  steps = _RL_STEPS.value if flags.FLAGS["rl_steps"].present else 60
  cfg.train.num_steps = steps
  cfg.train.eval_every = max(steps // 3, 1)
  print(f"demo: tiny VLA + GRPO on '{cfg.env.name}', {cfg.rl.num_prompts} initial states x "
        f"{cfg.rl.group_size} rollouts per step, {cfg.train.num_steps} steps; workdir {workdir}")
  s = trainer.train_and_evaluate(cfg, workdir)
  before, after = s["eval"][0], s["eval"][-1]
  print("\n=== result (greedy, held-out initial states) ===")
  print(f"success before RL: {before['success_rate']:.3f}   (step {before['step']})")
  print(f"success after RL:  {after['success_rate']:.3f}   (step {after['step']})")
  print(f"compile {s['compile_s']:.1f} s; median step {s['median_step_s']:.3f} s "
        f"({cfg.rl.num_prompts * cfg.rl.group_size / s['median_step_s']:.0f} trajectories/s)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags(PROG))
