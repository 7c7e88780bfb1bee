"""Pretraining's library side (launch.pretrain is its command line): the expert's demonstrations
of libero_pretrain tasks, the config that puts the pretrained model in a LIBERO suite, and its
zero-shot evaluation there."""

import json
import os
import time

from vla_rl_jax.demos import SEED_STRIDE


def record_demos(config, out: str, per_task: int, *, seed: int = 0, batch: int = 16,
                 max_attempts: int = 4, log=print) -> dict:
  """The expert's demonstrations of config.env (a libero_pretrain config) in `out`, as
  launch.make_demos writes them (vla_rl_jax.demos.record), tasks the expert cannot do dropped
  (manifest["dropped"]). Kept when `out` already holds a manifest for the same env options."""
  from envs import registry  # noqa: PLC0415
  from envs.base import views  # noqa: PLC0415
  from envs.tasks import experts  # noqa: PLC0415
  from vla_rl_jax import demos  # noqa: PLC0415
  kwargs = dict(config.env.kwargs)
  manifest_path = os.path.join(out, demos.MANIFEST)
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      m = json.load(f)
    if m.get("env_kwargs") == kwargs and m.get("per_task") == per_task:
      log(f"pretrain: keeping the demonstrations in {out}")
      return m
    raise demos.DemoError(f"{out} holds demonstrations of other options ({m.get('env_kwargs')}, "
                          f"{m.get('per_task')} per task): use a new --workdir")
  env = registry.make(config.env.name, image_size=config.env.image_size,
                      cameras=views(config.env.camera), **kwargs)
  return demos.record(out, env, experts.SuiteExpert(env), per_task, config.env.episode_length,
                      name=config.env.name, env_kwargs=kwargs, seed_start=seed * SEED_STRIDE,
                      max_attempts=max_attempts, batch=batch, drop_failed=True, log=log,
                      extra={"seed": seed},
                      action_space="LIBERO OSC_POSE deltas [dx, dy, dz, drx, dry, drz, gripper] in "
                                   "[-1, 1]; gripper +1 closes")


def suite_config(config, suite: str, workdir: str):
  """The pretraining config with env `suite` (its limit and options as configs/default.py gives
  them for the variant; model unchanged),
  starting from `workdir`'s parameters (train.init_from): what zero-shot evaluation builds, and a
  template for the SFT that follows."""
  from configs import default  # noqa: PLC0415
  c = config.copy_and_resolve_references()
  c.unlock()
  ref = default.get_config(f"variant={c.variant},env={suite}").env   # the suite's own env section
  c.env.name = suite
  c.env.episode_length = ref.episode_length
  c.env.kwargs = ref.kwargs.to_dict()
  c.train.init_from = workdir
  del c["sft"]
  return c


def zero_shot(config, suite: str, workdir: str, num_states: int | None = None) -> dict:
  """Greedy success of `workdir`'s parameters on `suite`: a report as launch.eval's."""
  from vla_rl_jax import evaluation, trainer  # noqa: PLC0415
  from vla_rl_jax import metrics as metrics_lib  # noqa: PLC0415
  from vla_rl_jax.builders import build  # noqa: PLC0415
  cfg = trainer._resolve(suite_config(config, suite, workdir))  # noqa: SLF001
  b = build(cfg)
  step, params = trainer.init_params(cfg, b)
  temp = cfg.policy.eval_temperature
  t0 = time.time()
  head = {"suite": suite, "step": step, "temperature": temp, "episode_length": cfg.env.episode_length}
  if num_states:
    n = -(-num_states // cfg.batch_shards) * cfg.batch_shards
    m = metrics_lib.to_host(evaluation.make_eval_fn(b, num_states=n, temperature=temp)(params))
    m["task_success"] = dict(zip(b.env.instructions, m["task_success"]))
    rep = {**head, "num_states": n, "evaluation_set": "random held-out draws", **m}
  else:
    pairs = evaluation.evaluation_set(b.env)
    out = metrics_lib.to_host(evaluation.make_policy_eval_fn(b, pairs, temp)(params))
    rep = {**head, "evaluation_set": "every task x every evaluation state, once",
           **evaluation.report(b.env, pairs, out["success"] > 0, out["length"], suite=suite,
                               grasped=out.get("grasped"))}
    rep["success_rate"] = sum(t["successes"] for t in rep["suites"].values()) / len(pairs)
  rep["seconds"] = round(time.time() - t0, 1)
  return rep
