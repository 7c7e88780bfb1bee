"""Ahead-of-time memory plan: lower and compile the FULL fused train step on fake CPU devices.

  python -m launch.aot_compile --config=configs/default.py:variant=base,env=libero_10 \
      --num_devices=8 --mesh=1,8,1 [--memory_limit_gb=80] [--debug]

Nothing is allocated at model size: the state enters as ShapeDtypeStructs carrying the run's
shardings (builders.build's abstract state, from eval_shape), so a 7B plan compiles on a laptop.
Prints one JSON object on stdout: per-device memory from XLA's memory analysis of the compiled
per-device (SPMD-partitioned) program, the analytic model FLOPs of a step (vla_rl_jax/flops.py),
XLA's own cost analysis, lower and compile seconds, the mesh and the batch.

Exit status: 0 the plan fits; 1 one line on stderr when the per-device total exceeds
--memory_limit_gb (or the build/compile cannot go on); 2 one line on a bad flag or config.

Caveats (also in the JSON's `notes`): the figures are what XLA's CPU backend plans for this
program, not what a GPU or TPU compiler would (different fusion, layouts and rematerialisation;
no async-collective buffers; bf16 arithmetic the CPU backend may widen to f32); treat them as an
estimate of the accelerator's plan. XLA's cost analysis counts a while/scan body ONCE, so its
`flops` is not the per-step total (the rollout's while_loop over calls and the update's scans over
epochs, minibatches and calls each count one iteration); the analytic figures are.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time


def fake_devices(n: int) -> None:
  """n fake CPU devices for the jax backend started after this (XLA reads the flag when the backend
  starts, not when jax is imported); any device count already in XLA_FLAGS is replaced."""
  xla = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{xla.strip()} --xla_force_host_platform_device_count={n}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"


def _argv_num_devices(argv: list[str], default: int = 8) -> int:
  """--num_devices from the raw command line (read before absl parses it: a --config.X override
  loads the config file, and with it jax, while flags parse); a bad value is left to absl."""
  for i, a in enumerate(argv):
    v = a.split("=", 1)[1] if a.startswith("--num_devices=") else (
        argv[i + 1] if a == "--num_devices" and i + 1 < len(argv) else None)
    if v is not None:
      return int(v) if re.fullmatch(r"\d+", v.strip()) and int(v) > 0 else default
  return default


if __name__ == "__main__":
  fake_devices(_argv_num_devices(sys.argv))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from launch.common import fail, loaded_config, parse_flags, run_or_exit  # noqa: E402

PROG = "launch.aot_compile"
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Run config, e.g. configs/default.py:variant=base,env=libero_10; override any "
    "field with --config.SECTION.FIELD=VALUE.", lock_config=True)
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 8, "Fake CPU devices to compile for.")
_MESH = flags.DEFINE_string("mesh", None, "data,fsdp,tensor sizes whose product is --num_devices, "
                            "e.g. 1,8,1 (default: the config's mesh, data filling the devices).")
_LIMIT = flags.DEFINE_float("memory_limit_gb", 80.0, "Per-device memory (GB = 1e9 bytes) the "
                            "plan must fit; over it the command exits 1.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of one line.")
flags.mark_flags_as_required(["config"])

NOTES = {
    "memory": "per device, from compiled.memory_analysis() of the SPMD-partitioned program on XLA's "
              "CPU backend; total = argument + output + temp - alias (donated state aliases its "
              "output). A GPU/TPU compiler fuses, lays out and rematerialises differently and adds "
              "collective buffers, and the CPU backend may widen bf16 arithmetic to f32; so treat "
              "these as an estimate of the accelerator's plan. generated_code reads 0 on the CPU "
              "backend.",
    "xla_cost_flops": "XLA's cost_analysis of the per-device program counts each while/scan body "
                      "once (one rollout call, one epoch/minibatch/call of the update), so it is not "
                      "the per-step total; model_flops is.",
    "model_flops": "analytic, 2 x multiply-adds incl. attention scores/values, summed over all "
                   "devices; the rollout at the full horizon (its early exit makes it an upper "
                   "bound) and the update at every minibatch live (vla_rl_jax/flops.py).",
}


def parse_mesh(spec: str | None, num_devices: int) -> tuple[int, int, int] | None:
  """'1,8,1' -> (1, 8, 1), checked against --num_devices; fail() with one line otherwise."""
  if spec is None:
    return None
  parts = [p.strip() for p in spec.split(",")]
  if len(parts) != 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
    fail(PROG, f"--mesh={spec}: give three positive integers data,fsdp,tensor, e.g. 1,"
               f"{num_devices},1")
  mesh = tuple(int(p) for p in parts)
  if min(mesh) < 1:
    fail(PROG, f"--mesh={spec}: every axis must be >= 1")
  if mesh[0] * mesh[1] * mesh[2] != num_devices:
    fail(PROG, f"--mesh={spec}: data * fsdp * tensor = {mesh[0] * mesh[1] * mesh[2]} must equal "
               f"--num_devices={num_devices}")
  return mesh


def xla_cost(compiled) -> dict:
  try:
    ca = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (not every backend offers it)
    return {}
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  ca = ca or {}
  return {k: float(ca[k]) for k in ("flops", "bytes accessed", "transcendentals") if k in ca}


def plan(config, num_devices: int, mesh: tuple[int, int, int] | None) -> dict:
  """Builds the run abstractly and compiles its train step; the plan as a dict."""
  import jax  # noqa: PLC0415  (after fake_devices)
  # compile_s is a real compile, and the memory analysis is that of a fresh executable
  jax.config.update("jax_enable_compilation_cache", False)
  from vla_rl_jax import config as config_lib  # noqa: PLC0415
  from vla_rl_jax import flops  # noqa: PLC0415
  from vla_rl_jax.builders import build  # noqa: PLC0415
  from vla_rl_jax.train_step import make_train_step  # noqa: PLC0415
  from vla_rl_jax.trainer import memory_figures  # noqa: PLC0415

  if jax.device_count() != num_devices or jax.devices()[0].platform != "cpu":
    raise RuntimeError(f"asked for {num_devices} fake CPU devices, jax started with "
                       f"{jax.device_count()} {jax.devices()[0].platform} devices (was jax's "
                       f"backend started before XLA_FLAGS was set?)")
  if mesh is not None:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
  rc = config_lib.resolve(config, num_devices)
  b = build(rc, jax.devices())
  state, stats = b.abstract_state
  sds = lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)
  args = (jax.tree_util.tree_map(sds, state, b.state_shardings),
          jax.tree_util.tree_map(sds, stats, b.env_stats_shardings))
  step = make_train_step(b)
  t = time.perf_counter()
  lowered = step.lower(*args)
  lower_s = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  f = flops.step_flops(rc, b.env)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  return {
      "config": _config_spec(), "variant": rc.variant,
      "model": rc.model.name, "env": rc.env.name, "num_devices": num_devices,
      "mesh": {"data": rc.mesh.data, "fsdp": rc.mesh.fsdp, "tensor": rc.mesh.tensor},
      "batch": {"num_prompts": rc.rl.num_prompts, "group_size": rc.rl.group_size,
                "oversample": rc.rl.oversample,
                "rollout_trajectories": rc.num_rollout_trajectories,
                "trained_trajectories": rc.num_trajectories, "minibatch_size": rc.rl.minibatch_size,
                "horizon": rc.env.episode_length, "chunk": rc.policy.chunk_size,
                "policy_calls": rc.num_calls, "image_size": rc.env.image_size},
      "dtype": rc.model.dtype, "param_dtype": rc.model.param_dtype, "num_params": int(n_params),
      "memory_per_device": memory_figures(compiled),
      "memory_limit_gb": _LIMIT.value,
      "model_flops": f.as_dict(),
      "model_flops_per_device": f.total / num_devices,
      "xla_cost_per_device": xla_cost(compiled),
      "lower_s": lower_s, "compile_s": compile_s,
      "jax_version": jax.__version__, "notes": NOTES,
  }


def _config_spec() -> str | None:
  for i, a in enumerate(sys.argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(sys.argv):
      return sys.argv[i + 1]
  return None


def main(argv):
  del argv
  n = _NUM_DEVICES.value
  if n < 1:
    fail(PROG, f"--num_devices={n}: must be >= 1")
  if not _LIMIT.value > 0:
    fail(PROG, f"--memory_limit_gb={_LIMIT.value}: must be > 0")
  mesh = parse_mesh(_MESH.value, n)
  config = loaded_config(PROG, _CONFIG)
  fake_devices(n)
  from vla_rl_jax.config import ConfigError  # noqa: PLC0415
  out = run_or_exit(PROG, _DEBUG.value, lambda: plan(config, n, mesh), (RuntimeError,),
                    (ConfigError, ValueError))
  print(json.dumps(out), flush=True)
  total = out["memory_per_device"].get("total_gb")
  if total is None:
    print(f"{PROG}: XLA gave no memory analysis for this program: the plan cannot be checked",
          file=sys.stderr, flush=True)
    raise SystemExit(1)
  if total > _LIMIT.value:
    print(f"{PROG}: the plan needs {total:.3f} GB per device (argument + output + temp - alias), "
          f"over --memory_limit_gb={_LIMIT.value:g}", file=sys.stderr, flush=True)
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags(PROG))
