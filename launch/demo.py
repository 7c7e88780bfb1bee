"""`make demo`: the main job end to end on this machine, printing success before and after RL.

Until the LIBERO pipeline lands this is the tiny config on the fake pixel task: a randomly
initialised VLA, GRPO with the paper's tricks (clip-higher, dynamic sampling, temperature 1.6),
greedy evaluation on held-out initial states before and after.
"""

import os
import tempfile

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write the run (default: a fresh temp dir).")
_STEPS = flags.DEFINE_integer("steps", 60, "RL steps.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from configs.default import get_config
  from vla_rl_jax import trainer

  cfg = get_config("variant=tiny")
  cfg.train.num_steps = _STEPS.value
  cfg.train.eval_every = max(_STEPS.value // 3, 1)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="vla_rl_jax_demo_")
  print(f"demo: tiny VLA + GRPO on '{cfg.env.name}', {cfg.rl.num_prompts} initial states x "
        f"{cfg.rl.group_size} rollouts per step, {cfg.train.num_steps} steps; workdir {workdir}")
  s = trainer.train_and_evaluate(cfg, workdir)
  before, after = s["eval"][0], s["eval"][-1]
  print("\n=== result (greedy, held-out initial states) ===")
  print(f"success before RL: {before['success_rate']:.3f}   (step {before['step']})")
  print(f"success after RL:  {after['success_rate']:.3f}   (step {after['step']})")
  print(f"compile {s['compile_s']:.1f} s; median step {s['median_step_s']:.3f} s "
        f"({cfg.rl.num_prompts * cfg.rl.group_size / s['median_step_s']:.0f} trajectories/s)")
  print(f"metrics: {os.path.join(workdir, 'metrics.jsonl')}  tensorboard: {os.path.join(workdir, 'tb')}")


if __name__ == "__main__":
  app.run(main)
