"""Evaluates a policy on held-out initial states: a run's checkpoint (greedy), or a scripted expert.

  python -m launch.eval --workdir=DIR [--step=N] [--out=FILE.json] [--video_dir=DIR]
  python -m launch.eval --policy=expert --env=libero_spatial --out=FILE.json [--video_dir=DIR]

On envs with a finite evaluation set (LIBERO's suites: 50 converted initial states per task) every
(task, state) pair runs once and the report gives success per task and per suite with 95% Wilson
intervals and the failed states; `--num_states=N` instead draws N held-out states at random (the
trainer's periodic evaluation); `--states_per_task=K` (expert) runs only each task's first K. The
model is rebuilt from the resolved config saved beside the checkpoints (workdir/config.json).
`--checkpoint` is a synonym of `--workdir`.
Videos: one animated GIF per episode (both cameras side by side where the env has both, the
instruction and the outcome as a caption) for the first `--num_videos` tasks' state 0 (envs without
a finite evaluation set: the first `--num_videos` held-out draws), and a contact sheet PNG.
"""

import json
import math
import os
import sys
import time
from typing import Any, Mapping

from absl import app, flags, logging

from launch.common import fail, parse_flags, parse_task_ids, preset_env

POLICIES = ("checkpoint", "expert")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (policy=checkpoint).")
_CKPT = flags.DEFINE_string("checkpoint", None, "Synonym of --workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_POLICY = flags.DEFINE_enum("policy", "checkpoint", POLICIES, "What acts: a trained checkpoint or "
                            "the env's scripted expert.")
_ENV = flags.DEFINE_string("env", None, "Env name (policy=expert), e.g. libero_spatial.")
_TASKS = flags.DEFINE_list("task_ids", None, "Restrict a suite to these task ids (policy=expert).")
_NUM = flags.DEFINE_integer("num_states", None, "Draw this many held-out states at random instead "
                            "of running the whole evaluation set.")
_PER_TASK = flags.DEFINE_integer("states_per_task", None, "policy=expert: only the first K "
                                 "evaluation states of each task (a quick sample of the full set).")
_TEMP = flags.DEFINE_float("temperature", None, "Sampling temperature (default: config's, 0 = greedy).")
_T = flags.DEFINE_integer("episode_length", None, "Control steps per episode (default: the config's, "
                          "or the env preset's for policy=expert).")
_OUT = flags.DEFINE_string("out", None, "Write the report here as JSON (it is printed as well).")
_VIDEO_DIR = flags.DEFINE_string("video_dir", None, "Write rollout GIFs and a contact sheet here.")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 4, "Episodes to film (tasks 0.., state 0).")
_VIDEO_SIZE = flags.DEFINE_integer("video_size", 128, "Video resolution per camera.")
_DEBUG = flags.DEFINE_bool("debug", False, "Raise the underlying exception (with its traceback) "
                           "instead of the one-line error for checkpoint and expert failures.")


def _fail(msg: str) -> None:
  fail("launch.eval", msg)


FLAGS_CHECKED = ("workdir", "checkpoint", "step", "policy", "env", "task_ids", "num_states",
                 "states_per_task", "temperature", "episode_length", "out", "video_dir",
                 "num_videos", "video_size")
MAX_VIDEO_SIZE = 1024   # pixels per camera side: frames are held in memory, T x cameras x H x W x 3


def saved_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints under workdir/checkpoints (orbax renames a step's
  temporary directory to its number once it is complete)."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def check_args(a: Mapping[str, Any]) -> None:
  """Every argument checked at start-up, before jax or an env is built: a bad one ends the program
  with one line naming the flag, the value and what is allowed (status 2)."""
  def bad(flag: str, allowed: str) -> None:
    value = ",".join(a[flag]) if isinstance(a[flag], (list, tuple)) else a[flag]
    _fail(f"--{flag}={value}: {allowed}")

  if a["num_states"] is not None and a["num_states"] <= 0:
    bad("num_states", "must be > 0 (held-out states drawn at random)")
  if a["states_per_task"] is not None:
    if a["policy"] != "expert":
      bad("states_per_task", "applies to --policy=expert only (--num_states draws held-out states "
                             "for a checkpoint)")
    if a["states_per_task"] <= 0:
      bad("states_per_task", "must be > 0 (the first K evaluation states of each task)")
  t = a["temperature"]
  if t is not None and not (math.isfinite(t) and t >= 0):
    bad("temperature", "must be a finite number >= 0 (0 = greedy)")
  if a["episode_length"] is not None and a["episode_length"] <= 0:
    bad("episode_length", "must be > 0 (control steps per episode)")
  if a["num_videos"] < 0:
    bad("num_videos", "must be >= 0 (episodes to film)")
  if not 1 <= a["video_size"] <= MAX_VIDEO_SIZE:
    bad("video_size", f"must be in [1, {MAX_VIDEO_SIZE}] (pixels per camera side)")
  if a["step"] is not None and a["step"] < 0:
    bad("step", "must be >= 0 (a saved checkpoint's step)")
  if a["policy"] == "expert":
    for f in ("workdir", "checkpoint", "step", "num_states", "temperature"):
      if a[f] is not None:
        bad(f, "applies to --policy=checkpoint only (the expert acts greedily on the env's "
               "whole evaluation set)")
    if not a["env"]:
      _fail("--policy=expert needs --env=NAME (a LIBERO suite or task)")
    from envs import registry  # noqa: PLC0415
    if a["env"] not in registry.names():
      bad("env", f"unknown env; registered envs: {list(registry.names())}")
    if a["task_ids"]:
      parse_task_ids("launch.eval", a["task_ids"], a["env"])
    return
  for f in ("env", "task_ids"):
    if a[f]:
      bad(f, "applies to --policy=expert only (a checkpoint's env comes from its saved config)")
  if a["workdir"] and a["checkpoint"] and a["workdir"] != a["checkpoint"]:
    _fail(f"--workdir={a['workdir']} and --checkpoint={a['checkpoint']} differ (synonyms: give one)")
  workdir = a["workdir"] or a["checkpoint"]
  if not workdir:
    _fail("give --workdir=DIR (a training run) or --policy=expert --env=NAME")
  flag = "workdir" if a["workdir"] else "checkpoint"
  if not os.path.isdir(workdir):
    bad(flag, "no such directory")
  if a["step"] is not None:
    steps = saved_steps(workdir)
    if a["step"] not in steps:
      bad("step", f"no complete checkpoint of that step under {workdir}/checkpoints; saved steps: "
                  f"{steps}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  check_args({f: flags.FLAGS[f].value for f in FLAGS_CHECKED})
  if _POLICY.value == "expert":
    report = _eval_expert()
  else:
    report = _eval_checkpoint()
  text = json.dumps(report, indent=2)
  print(text)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(_OUT.value + ".tmp", _OUT.value)


def _video_env(name: str, kwargs):
  """The run's env at --video_size with every camera it has of (agentview, wrist), side by side."""
  from envs import registry
  have = registry.cameras(name) or ("agentview",)
  cams = tuple(c for c in ("agentview", "wrist") if c in have) or have[:1]
  return registry.make(name, image_size=_VIDEO_SIZE.value, cameras=cams, **dict(kwargs))


def _videos(env, video_env, actor, pairs, horizon, seed=0) -> dict:
  """Films a few episodes (the same actor, the same reset) and writes GIFs + a contact sheet.

  pairs: the env's finite evaluation set (each task's first state is filmed), or None for an env
  without one (fake_reach): then the first --num_videos held-out draws of `env.eval_reset`."""
  import jax
  import numpy as np
  from vla_rl_jax import evaluation, media
  if pairs is not None:
    _, first = np.unique(pairs[:, 0], return_index=True)    # each task's first evaluation state
    starts = pairs[first[:_NUM_VIDEOS.value]]
    reset_fn, tasks = None, starts[:, 0]
    names = [f"task{k:02d}_state{i:02d}" for k, i in starts]
  else:
    starts = np.asarray(jax.random.split(jax.random.PRNGKey(seed), _NUM_VIDEOS.value))
    reset_fn = env.eval_reset
    tasks = np.asarray(jax.vmap(lambda r: env.eval_reset(r).obs["task_id"])(starts))
    names = [f"episode{j:02d}_task{k:02d}" for j, k in enumerate(tasks)]
  out = evaluation.run_episodes(env, actor, starts, horizon, seed=seed, reset_fn=reset_fn,
                                video_env=video_env)
  paths, rows = [], []
  side = np.concatenate([out["frames"][c] for c in video_env.cameras], axis=3)
  for j, (k, name) in enumerate(zip(tasks, names)):
    frames = media.episode_frames(side[j], int(out["length"][j]), env.instructions[k],
                                  bool(out["success"][j]))
    paths.append(media.write_gif(os.path.join(_VIDEO_DIR.value, f"{name}.gif"), frames))
    picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    rows.extend(frames[p] for p in picks)
  sheet = media.contact_sheet(os.path.join(_VIDEO_DIR.value, "contact_sheet.png"), rows, columns=6)
  return {"videos": paths, "contact_sheet": sheet}


def _eval_expert() -> dict:
  if not _ENV.value:
    _fail("--policy=expert needs --env=NAME (a LIBERO suite or task)")
  from envs.tasks import experts
  from vla_rl_jax import evaluation

  name = _ENV.value
  env, kwargs, horizon = preset_env("launch.eval", name, image_size=32, cameras=(),
                                    task_ids=_TASKS.value, episode_length=_T.value)
  k = _PER_TASK.value
  if k is not None and k > getattr(env, "num_eval_states", k):
    _fail(f"--states_per_task={k}: must be <= {env.num_eval_states} (the evaluation states per "
          f"task of {name!r})")
  pairs = evaluation.evaluation_set(env, k)
  if pairs is None:
    _fail(f"env {name!r} has no finite evaluation set (reset_to / num_eval_states)")
  try:
    expert = experts.SuiteExpert(env)
  except ValueError as e:
    if _DEBUG.value:
      raise
    _fail(str(e))
  actor = evaluation.expert_actor(expert)
  t0 = time.time()
  out = evaluation.run_episodes(env, actor, pairs, horizon)
  rep = {"policy": "expert", "env": name, "env_kwargs": kwargs, "episode_length": horizon,
         "evaluation_set": ("every task x every converted LIBERO initial state, once" if k is None
                            else f"every task x its first {k} converted LIBERO initial states"),
         **evaluation.report(env, pairs, out["success"], out["length"], suite=name,
                             grasped=out.get("grasped")),
         "unstable_episodes": int(out["unstable"].sum()), "seconds": round(time.time() - t0, 1)}
  if _VIDEO_DIR.value:
    video_env = _video_env(name, kwargs)
    rep.update(_videos(env, video_env, actor, pairs, horizon))
  return rep


def _eval_checkpoint() -> dict:
  workdir = _WORKDIR.value or _CKPT.value
  if not workdir:
    _fail("give --workdir=DIR (a training run) or --policy=expert --env=NAME")
  import jax
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax import evaluation
  from vla_rl_jax import metrics as metrics_lib
  from vla_rl_jax.builders import build

  if not os.path.exists(os.path.join(workdir, ckpt_lib.CONFIG_FILE)):
    _fail(f"{workdir} holds no {ckpt_lib.CONFIG_FILE}: not a training run's workdir")
  cfg = ckpt_lib.read_config(workdir, jax.device_count())
  if _T.value and _T.value != cfg.env.episode_length:
    _fail("--episode_length cannot change a checkpoint's horizon (its config fixes the policy calls)")
  b = build(cfg)
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.train.keep_checkpoints)
  warn = lambda text: print(f"launch.eval: warning: {text}", file=sys.stderr, flush=True)
  try:  # verified: digests as saved, every value finite; the latest falls back to an older one
    found = ckpt.restore_for_inference(_STEP.value, *b.abstract_state, b.state_shardings,
                                       b.env_stats_shardings, warn=warn)
  except ckpt_lib.CheckpointError as e:
    if _DEBUG.value:
      raise
    _fail(str(e))
  if found is None:
    _fail(f"no complete checkpoint under {workdir}/checkpoints")
  step, state, _ = found
  temp = cfg.policy.eval_temperature if _TEMP.value is None else _TEMP.value
  pairs = evaluation.evaluation_set(b.env)
  t0 = time.time()
  head = {"policy": "checkpoint", "workdir": os.path.abspath(workdir), "step": step,
          "env": cfg.env.name, "episode_length": cfg.env.episode_length, "temperature": temp}
  if _NUM.value or pairs is None:
    n = _NUM.value or cfg.train.eval_num_states
    if n % cfg.batch_shards:
      _fail(f"--num_states={n} must be divisible by the {cfg.batch_shards} batch shards")
    m = metrics_lib.to_host(evaluation.make_eval_fn(b, num_states=n, temperature=temp)(state.params))
    m["task_success"] = dict(zip(b.env.instructions, m["task_success"]))
    rep = {**head, "num_states": n, "evaluation_set": "random held-out draws", **m}
  else:
    if len(pairs) % cfg.batch_shards:
      _fail(f"the {len(pairs)} evaluation states do not split over {cfg.batch_shards} batch shards")
    out = metrics_lib.to_host(evaluation.make_policy_eval_fn(b, pairs, temp)(state.params))
    metrics_lib.check_render({"render_overflow": float(out["render_overflow"].sum())}, step,
                             "evaluation")
    rep = {**head, "evaluation_set": "every task x every evaluation state, once",
           **evaluation.report(b.env, pairs, out["success"] > 0, out["length"], suite=cfg.env.name,
                               grasped=out.get("grasped")),
           "unstable_episodes": int(out["unstable"].sum())}
  rep["seconds"] = round(time.time() - t0, 1)
  if _VIDEO_DIR.value:
    video_env = _video_env(cfg.env.name, cfg.env.kwargs)
    actor = evaluation.policy_actor(b, state.params, temp)
    rep.update(_videos(b.env, video_env, actor, pairs, cfg.env.episode_length, seed=cfg.seed))
  return rep


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags("launch.eval"))
