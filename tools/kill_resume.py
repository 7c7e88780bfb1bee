"""Kills a tiny training run at random moments, resumes it each time, and checks the end result.

  python tools/kill_resume.py --kills=20 [--steps=30] [--seed=0]

Each round starts `launch.train` on the same workdir and SIGKILLs it after a random delay (during
start-up, compilation, a step, a save or an evaluation); then the run is finished without a kill.
Checked at the end, against an uninterrupted run of the same config: the final parameters are
bit-identical, metrics.jsonl holds every step exactly once and parses as strict JSON, every
checkpoint left verifies, and no LOCK is left behind. Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(workdir: str, steps: int) -> list[str]:
  return [sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
          f"--workdir={workdir}", f"--config.train.num_steps={steps}",
          "--config.train.checkpoint_every=3", "--config.train.eval_every=10",
          "--config.rl.num_prompts=8", "--config.rl.minibatch_size=32"]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--kills", type=int, default=20)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_delay", type=float, default=14.0, help="seconds before a kill, at most")
  a = p.parse_args()
  rnd = random.Random(a.seed)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  root = tempfile.mkdtemp(prefix="kill_resume_")
  ref, work = os.path.join(root, "ref"), os.path.join(root, "killed")
  subprocess.run(_args(ref, a.steps), cwd=ROOT, env=env, check=True, capture_output=True)
  kills, finished_early, takeovers = 0, 0, 0
  for _ in range(a.kills):
    proc = subprocess.Popen(_args(work, a.steps), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
      proc.wait(timeout=rnd.uniform(1.0, a.max_delay))
      finished_early += 1
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      kills += 1
    out = proc.communicate()[0]
    takeovers += "taking over the lock" in out
    if proc.returncode not in (0, -signal.SIGKILL):
      raise SystemExit(f"a run failed (status {proc.returncode}):\n{out}")
  last = subprocess.run(_args(work, a.steps), cwd=ROOT, env=env, capture_output=True, text=True)
  if last.returncode:
    raise SystemExit(f"the final run failed:\n{last.stdout}{last.stderr}")

  import jax
  import numpy as np
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax.builders import build

  def final(workdir):
    b = build(ckpt_lib.read_config(workdir, jax.device_count()))
    ck = ckpt_lib.Checkpointer(workdir, 3)
    states = {s: ck.restore(s, *b.abstract_state, b.state_shardings, b.env_stats_shardings)[0]
              for s in ck.all_steps()}  # every checkpoint left verifies (raises otherwise)
    return states[a.steps], sorted(states)

  got, steps_left = final(work)
  want, _ = final(ref)
  same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
             zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(want.params)))
  rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
  keys = [(r["kind"], r["step"]) for r in rows]
  ref_keys = [(r["kind"], r["step"]) for r in
              (json.loads(line) for line in open(os.path.join(ref, "metrics.jsonl")))]
  report = {"kills": kills, "runs_that_finished_before_their_kill": finished_early,
            "lock_takeovers": takeovers, "final_params_bit_identical": same,
            "metric_rows_each_once": len(keys) == len(set(keys)),
            "metric_rows_as_uninterrupted": sorted(keys) == sorted(ref_keys),
            "checkpoints_verified": steps_left,
            "lock_left": os.path.exists(os.path.join(work, "LOCK")), "workdir": work}
  print(json.dumps(report))
  ok = (same and report["metric_rows_each_once"] and report["metric_rows_as_uninterrupted"]
        and not report["lock_left"])
  raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
  main()
