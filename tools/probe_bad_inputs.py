"""Tries nonsense in every config field and launcher flag; counts clear errors, unclear ones and silent acceptance.

  python tools/probe_bad_inputs.py [--verbose]

Config fields: every leaf of get_config("variant=tiny") and get_config("variant=tiny,env=
libero_spatial") (env options included) gets the values that are nonsense for its type (negative,
zero, NaN, inf, a huge int, a wrong type, an unknown choice) minus the ones that field legitimately
takes (LEGIT), plus a misspelt field name per section; each goes through config.resolve as a plain
dict (so wrong types reach the validator). CLEAR: a ConfigError naming the field. UNCLEAR: any other
exception, or a message that does not name it. SILENT: accepted.
Launcher flags: launch.eval's checks (check_args, in process), and launch.train / launch.eval /
launch.make_demos run as subprocesses for flag-parsing cases. CLEAR: exit 2 with one stderr line
naming the flag, no traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HUGE = 2**40
# values a field legitimately takes although they look like nonsense for its type
LEGIT = {
    "seed": {0}, "mesh.data": {-1}, "distributed.process_id": {-1, 0}, "rollout.policy_microbatch": {0},
    "rl.shuffle_blocks": {0}, "optim.warmup_steps": {0}, "rl.kl_coef": {0.0},
    "rl.entropy_coef": {0.0}, "policy.eval_temperature": {0.0}, "optim.weight_decay": {0.0},
    "optim.grad_clip": {0.0}, "rl.clip_low": {0.0}, "rl.clip_high": {0.0}, "optim.b1": {0.0},
    "optim.b2": {0.0}, "mesh.max_replicated_mb": {0.0}, "env.kwargs.slot_angle": {-1.0, 0.0},
    "env.kwargs.start_noise": {0.0}, "env.kwargs.num_steps_wait": {0},
    "env.kwargs.settle_substeps": {0}, "env.kwargs.density": {0.0}, "env.kwargs.viscosity": {0.0},
    "env.kwargs.color_jitter": {0.0}, "env.kwargs.light_jitter": {0.0},
    "env.kwargs.camera_jitter": {0.0}, "distributed.coordinator_address": {""},
}
# extra nonsense for particular fields (beyond the per-type values)
EXTRA = {
    "rl.clip_low": [1.0], "optim.b1": [1.0], "optim.b2": [1.5], "rl.group_size": [1],
    "model.num_bins": [255], "env.kwargs.radius": [5.0], "env.kwargs.step_size": [10.0],
    "env.kwargs.slot_radius": [2.0], "env.kwargs.start_noise": [3.0], "env.kwargs.task_ids": [(1, 1)],
    "env.kwargs.timestep": [0.0033], "env.kwargs.control_hz": [0.5], "model.vocab_size": [300],
    "distributed.coordinator_address": ["no-port"], "variant": ["huge"],
}


def _leaves(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):   # sections, and env.kwargs within env
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _nonsense(path: str, v):
  if isinstance(v, bool):
    vals = ["yes", 1]
  elif isinstance(v, int):
    vals = [-1, 0, HUGE, -HUGE, 2.5, "abc"]
  elif isinstance(v, float):
    vals = [-1.0, 0.0, math.nan, math.inf, -math.inf, "abc", True]
  elif isinstance(v, str):
    vals = ["nonsense", 3]
  elif isinstance(v, tuple):
    vals = [(99,), (-1,), "abc", (1.5,)]
  else:
    vals = [object()]
  legit = LEGIT.get(path, set())
  vals = [x for x in vals if not (not isinstance(x, (str, tuple, bool)) and type(x) is type(v)
                                  and x in legit)]
  if isinstance(v, float):   # an int where a float is expected is a number: legitimate
    vals = [x for x in vals if not (isinstance(x, float) and x == 0.0 and 0.0 in legit)]
  return vals + EXTRA.get(path, [])


def _set(d, path, value):
  *parts, last = path.split(".")
  for p in parts:
    d = d[p]
  d[last] = value


def probe_config(arg: str):
  import copy

  from configs.default import get_config
  from vla_rl_jax import config as config_lib
  base = get_config(arg).to_dict()
  config_lib.resolve(base, 8)   # the baseline itself must resolve
  rows = []
  for path, v in _leaves(base):
    for bad in _nonsense(path, v):
      d = copy.deepcopy(base)
      _set(d, path, bad)
      rows.append((f"{arg}: config.{path}={bad!r}", _try_resolve(config_lib, d, path)))
  sections = [k for k, v in base.items() if isinstance(v, dict)] + [""]
  for s in sections:   # a misspelt field in each section (and at the top level)
    d = copy.deepcopy(base)
    node = d[s] if s else d
    name = sorted(k for k in node)[0] + "x"
    node[name] = 1
    rows.append((f"{arg}: config.{s + '.' if s else ''}{name} (unknown)",
                 _try_resolve(config_lib, d, f"{s + '.' if s else ''}{name}", suggest=True)))
  return rows


def _try_resolve(config_lib, d, path, suggest=False):
  try:
    config_lib.resolve(d, 8)
  except config_lib.ConfigError as e:
    msg = str(e)
    named = f"config.{path}" in msg or (path.count(".") and f"config.{path.rsplit('.', 1)[0]}" in msg
                                        and path.startswith(("mesh", "optim")))
    if named and "\n" not in msg and (not suggest or "did you mean" in msg):
      return "clear", msg
    return "unclear", msg
  except Exception as e:  # noqa: BLE001
    return "unclear", f"{type(e).__name__}: {e}"
  return "silent", ""


def probe_eval_checks():
  """launch.eval's start-up checks, in process (each flag's nonsense values)."""
  import tempfile

  from launch import eval as eval_lib
  run = tempfile.mkdtemp()
  os.makedirs(os.path.join(run, "checkpoints", "10"))
  cases = [("num_states", v) for v in (0, -1)] + [("temperature", v) for v in
                                                   (-1.0, math.nan, math.inf)]
  cases += [("num_videos", -1), ("video_size", 0), ("video_size", -5), ("video_size", 100000),
            ("episode_length", 0), ("episode_length", -3), ("step", -1), ("step", 7),
            ("workdir", "/nonexistent"), ("env", "libero_goal"), ("task_ids", ["1"])]
  expert = [("task_ids", ["0", "99"]), ("task_ids", ["-1"]), ("task_ids", ["a"]),
            ("env", "nonsense"), ("num_states", 8), ("temperature", 0.5), ("workdir", run)]
  rows = []
  for policy, group in (("checkpoint", cases), ("expert", expert)):
    for flag, value in group:
      a = {f: None for f in eval_lib.FLAGS_CHECKED}
      a.update(policy=policy, num_videos=4, video_size=128)
      if policy == "checkpoint":
        a["workdir"] = run
      else:
        a["env"] = "libero_goal"
      a[flag] = value
      rows.append((f"launch.eval.check_args --policy={policy} --{flag}={value}",
                   _try_exit(eval_lib.check_args, a, flag)))
  return rows


def _try_exit(fn, a, flag):
  import contextlib
  import io
  err = io.StringIO()
  try:
    with contextlib.redirect_stderr(err):
      fn(a)
  except SystemExit as e:
    lines = err.getvalue().strip().splitlines()
    ok = e.code == 2 and len(lines) == 1 and f"--{flag}" in lines[0]
    return ("clear" if ok else "unclear"), " | ".join(lines)
  except Exception as e:  # noqa: BLE001
    return "unclear", f"{type(e).__name__}: {e}"
  return "silent", ""


SUBPROCESS_CASES = [
    ("launch.train", ["--config=configs/default.py:variant=tiny", "--workdir=/tmp/probe_x",
                      "--config.rl.grop_size=8"], "grop_size"),
    ("launch.train", ["--config=configs/default.py:variant=tiny", "--workdir=/tmp/probe_x",
                      "--config.rl.group_size=abc"], "group_size"),
    ("launch.train", ["--config=configs/default.py:variant=tiny", "--workdir=/tmp/probe_x",
                      "--config.seed=99999999999999"], "seed"),
    ("launch.train", ["--config=configs/default.py:variant=tiny", "--workdir=/tmp/probe_x",
                      "--config.env.kwargs.radius=nan"], "radius"),
    ("launch.train", ["--config=configs/default.py:varient=tiny", "--workdir=/tmp/probe_x"],
     "varient"),
    ("launch.train", ["--config=configs/default.py:variant=huge", "--workdir=/tmp/probe_x"],
     "variant"),
    ("launch.train", ["--config=configs/default.py:env=nope", "--workdir=/tmp/probe_x"], "env.name"),
    ("launch.train", ["--config=configs/nonexistent.py", "--workdir=/tmp/probe_x"], "config"),
    ("launch.train", ["--config=configs/default.py"], "workdir"),
    ("launch.train", ["--config=configs/default.py", "--workdir="], "workdir"),
    ("launch.train", ["--config=configs/default.py", "--workdir=/dev/null"], "workdir"),
    ("launch.eval", ["--num_states=abc", "--workdir=."], "num_states"),
    ("launch.eval", ["--policy=human"], "policy"),
    ("launch.eval", ["--temperature=nan", "--workdir=."], "temperature"),
    ("launch.eval", ["--wrokdir=."], "wrokdir"),
    ("launch.make_demos", ["--suite=libero_goal", "--out=/tmp/probe_d", "--seed=5000"], "seed"),
    ("launch.make_demos", ["--suite=libero_goal", "--out=/tmp/probe_d", "--per_task=0"], "per_task"),
    ("launch.make_demos", ["--suite=libero_goal", "--out=/tmp/probe_d", "--image_size=-1"],
     "image_size"),
    ("launch.make_demos", ["--suite=libero_goal", "--out=/tmp/probe_d", "--task_ids=12"],
     "task_ids"),
    ("launch.make_demos", ["--suite=libero_goal", "--out=/tmp/probe_d", "--cameras=top"], "cameras"),
    ("launch.make_demos", ["--suite=nope", "--out=/tmp/probe_d"], "suite"),
]


def probe_subprocesses():
  rows = []
  for module, args, name in SUBPROCESS_CASES:
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    lines = out.stderr.strip().splitlines()
    ok = (out.returncode == 2 and len(lines) == 1 and name in lines[0]
          and "Traceback" not in out.stderr)
    kind = "clear" if ok else ("silent" if out.returncode == 0 else "unclear")
    rows.append((f"{module} {' '.join(args)} [{name}]", (kind, " | ".join(lines[-3:]))))
  return rows


def _field(what: str) -> str:
  """The field or flag a probe row is about (for the 'fields' count)."""
  if " config." in what:
    return what.split(" config.", 1)[1].split("=")[0].split(" ")[0]
  if what.startswith("launch.eval.check_args"):
    return what.split(" --", 2)[2].split("=")[0]
  return what.split(" ")[0] + " " + what.rsplit("[", 1)[-1]


def main():
  verbose = "--verbose" in sys.argv
  groups = {
      "config (fake_reach tiny)": probe_config("variant=tiny"),
      "config (libero_spatial tiny)": probe_config("variant=tiny,env=libero_spatial"),
      "launch.eval checks": probe_eval_checks(),
      "launcher command lines": probe_subprocesses(),
  }
  print(f"{'group':32s} {'fields':>6s} {'tried':>6s} {'clear':>6s} {'unclear':>8s} {'silent':>7s}")
  total = [0, 0, 0, 0, 0]
  for g, rows in groups.items():
    fields = len({_field(r[0]) for r in rows})
    n = [fields, len(rows)] + [sum(1 for _, (k, _) in rows if k == kind)
                               for kind in ("clear", "unclear", "silent")]
    total = [a + b for a, b in zip(total, n)]
    print(f"{g:32s} {n[0]:6d} {n[1]:6d} {n[2]:6d} {n[3]:8d} {n[4]:7d}")
  print(f"{'total':32s} {total[0]:6d} {total[1]:6d} {total[2]:6d} {total[3]:8d} {total[4]:7d}")
  for g, rows in groups.items():
    for what, (kind, msg) in rows:
      if kind != "clear" or verbose:
        print(f"{kind.upper():8s} {what}  -> {msg[:200]}")


if __name__ == "__main__":
  main()
