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
from vla_rl_jax.demos import SEED_STRIDE

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
_DEBUG = flags.DEFINE_bool("debug", False, "Raise the underlying exception (with its traceback) "
                           "instead of the one-line error.")




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
  from vla_rl_jax import demos

  name, out = _SUITE.value, _OUT.value
  if os.path.exists(os.path.join(out, demos.MANIFEST)) and not _FORCE.value:
    _fail(f"{out} already holds demonstrations (pass --overwrite to replace them)")
  env, kwargs, horizon = preset_env("launch.make_demos", name, image_size=_SIZE.value,
                                    cameras=_CAMS.value, task_ids=_TASKS.value,
                                    episode_length=_T.value, env_flag="suite")
  t0 = time.time()
  try:
    expert = experts.SuiteExpert(env)
    demos.record(out, env, expert, _PER_TASK.value, horizon, name=name, env_kwargs=kwargs,
                 seed_start=_SEED.value * SEED_STRIDE, max_attempts=_ATTEMPTS.value,
                 batch=_BATCH.value, extra={"seed": _SEED.value},
                 action_space="LIBERO OSC_POSE deltas [dx, dy, dz, drx, dry, drz, gripper] in "
                              "[-1, 1]; gripper +1 closes",
                 log=lambda text: print(text, flush=True))
  except ValueError as e:   # DemoError, or an expert that does not cover the suite
    if _DEBUG.value:
      raise
    _fail(str(e))
  print(f"make_demos: wrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags("launch.make_demos"))
