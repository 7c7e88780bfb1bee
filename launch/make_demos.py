"""Scripted-expert demonstrations of a LIBERO-MJX suite, in the format SFT reads (vla_rl_jax/demos.py).

  python -m launch.make_demos --suite=libero_spatial --per_task=1 --out=DIR
      [--task_ids=0,3] [--image_size=128] [--cameras=agentview,wrist] [--seed=0]

Each task gets `per_task` SUCCESSFUL episodes (1: the paper's one-demonstration regime, up to 50),
started from the env's training stream (never an evaluation state). The expert runs in batches of
`--batch` episodes; a task whose expert keeps failing (more than `--max_attempts` x per_task tries)
stops the command with the count it reached.
"""

import os
import time

from absl import app, flags, logging

from launch.common import fail, parse_flags, preset_env

_SUITE = flags.DEFINE_string("suite", None, "A LIBERO-MJX env: libero_spatial, libero_object, "
                             "libero_goal, libero_10 (or another registered LIBERO env).")
_PER_TASK = flags.DEFINE_integer("per_task", 1, "Successful demonstrations per task (1..50).")
_OUT = flags.DEFINE_string("out", None, "Output directory (created; must not hold a manifest).")
_TASKS = flags.DEFINE_list("task_ids", None, "Only these task ids of the suite.")
_SIZE = flags.DEFINE_integer("image_size", 128, "Square image size of every camera.")
_CAMS = flags.DEFINE_list("cameras", ["agentview", "wrist"], "Cameras to record.")
_T = flags.DEFINE_integer("episode_length", None, "Control-step limit (default: the suite preset's).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the training-stream resets.")
_BATCH = flags.DEFINE_integer("batch", 16, "Episodes run together (memory: T x cameras x H x W x 3 "
                              "bytes each).")
_ATTEMPTS = flags.DEFINE_integer("max_attempts", 4, "Give up on a task after this many x per_task tries.")
_FORCE = flags.DEFINE_bool("overwrite", False, "Replace an existing demonstration directory.")


SEED_STRIDE = 1_000_003   # --seed=s starts the episode seeds at s * SEED_STRIDE


def _fail(msg: str) -> None:
  fail("launch.make_demos", msg)


MAX_SEED = (2**31 - 1) // SEED_STRIDE - 1   # episode seeds (seed * SEED_STRIDE + n) are int32


def check_args(a) -> None:
  """The numeric flags, before anything is built: one line naming the flag (status 2)."""
  for flag, lo, hi, what in (("image_size", 1, 1024, "pixels per camera side"),
                             ("episode_length", 1, 100_000, "control steps"),
                             ("seed", 0, MAX_SEED, "episode seeds are seed * 1000003 + n, int32"),
                             ("batch", 1, 100_000, "episodes run together"),
                             ("max_attempts", 1, 1000, "tries per demonstration")):
    v = a[flag]
    if v is not None and not lo <= v <= hi:
      _fail(f"--{flag}={v}: must be in [{lo}, {hi}] ({what})")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if not _SUITE.value or not _OUT.value:
    _fail("--suite and --out are required")
  if not 1 <= _PER_TASK.value <= 50:
    _fail(f"--per_task={_PER_TASK.value}: allowed 1..50")
  check_args({f: flags.FLAGS[f].value for f in ("image_size", "episode_length", "seed", "batch",
                                                "max_attempts")})
  from envs.tasks import experts
  from vla_rl_jax import demos, evaluation

  name, out = _SUITE.value, _OUT.value
  if os.path.exists(os.path.join(out, demos.MANIFEST)) and not _FORCE.value:
    _fail(f"{out} already holds demonstrations (pass --overwrite to replace them)")
  env, kwargs, horizon = preset_env("launch.make_demos", name, image_size=_SIZE.value,
                                    cameras=_CAMS.value, task_ids=_TASKS.value,
                                    episode_length=_T.value, env_flag="suite")
  os.makedirs(out, exist_ok=True)
  if not hasattr(env, "reset_task"):
    _fail(f"env {name!r} cannot reset a given task from its training stream (reset_task)")
  try:
    expert = experts.SuiteExpert(env)
  except ValueError as e:
    _fail(str(e))
  import jax
  import numpy as np
  actor = evaluation.expert_actor(expert)
  reset_fn = lambda a: env.reset_task(a[0], jax.random.PRNGKey(a[1]))  # noqa: E731

  need = {k: _PER_TASK.value for k in range(env.num_tasks)}
  tries = {k: 0 for k in need}
  got: dict[int, list] = {k: [] for k in need}
  next_seed = _SEED.value * SEED_STRIDE
  t0 = time.time()
  while any(need.values()):
    starts = []
    for k in need:
      for _ in range(need[k] + (1 if need[k] else 0)):   # one spare per task and round
        if need[k] and tries[k] < _ATTEMPTS.value * _PER_TASK.value:
          starts.append((k, next_seed))
          next_seed += 1
          tries[k] += 1
    if not starts:
      short = {env.instructions[k]: len(got[k]) for k in need if need[k]}
      _fail(f"the expert did not succeed often enough: successes so far {short}")
    batch = np.asarray(starts, np.int32)
    res = evaluation.run_episodes(env, actor, batch, horizon, reset_fn=reset_fn, video_env=env,
                                  batch_size=_BATCH.value)
    for j, (k, seed) in enumerate(batch):
      k = int(k)
      if not res["success"][j] or not need[k]:
        continue
      t = int(res["length"][j])
      f = demos.write_episode(out, k, len(got[k]), res["actions"][j, :t],
                              {c: res["frames"][c][j, :t + 1] for c in env.cameras},
                              res["proprio"][j, :t + 1], int(seed))
      got[k].append({"file": f, "task_id": k, "instruction": env.instructions[k], "length": t,
                     "seed": int(seed)})
      need[k] -= 1
    print(f"make_demos: {sum(len(v) for v in got.values())}/{_PER_TASK.value * env.num_tasks} "
          f"episodes ({time.time() - t0:.0f} s)", flush=True)
  attempts = {env.instructions[k]: tries[k] for k in tries}
  demos.write_manifest(out, {
      "env": name, "env_kwargs": kwargs, "instructions": list(env.instructions),
      "cameras": list(env.cameras), "image_size": list(env.image_size), "control_hz": 20,
      "episode_length_limit": horizon, "per_task": _PER_TASK.value, "seed": _SEED.value,
      "action_space": "LIBERO OSC_POSE deltas [dx, dy, dz, drx, dry, drz, gripper] in [-1, 1]; "
                      "gripper +1 closes",
      "attempts": attempts,
      "episodes": [e for k in sorted(got) for e in got[k]]})
  print(f"make_demos: wrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags("launch.make_demos"))
