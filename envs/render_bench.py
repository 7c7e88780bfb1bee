"""Render benchmarks: the JAX ray caster (envs/render.py) vs MuJoCo's own OpenGL renderer.

    bench_render(mj_model, camera, B, height, width, repeats) -> dict   # JAX renderer, batched
    bench_mujoco_renderer(mj_model, camera, height, width, repeats) -> dict  # mujoco.Renderer

Run as a script for a quick table on the bundled scene (envs/assets/bench_scene.xml):
    python -m envs.render_bench [--batches 1,64,256] [--size 128]
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs.render import Renderer

SCENE = os.path.join(os.path.dirname(__file__), "assets", "bench_scene.xml")


def load_scene() -> mujoco.MjModel:
  return mujoco.MjModel.from_xml_path(SCENE)


def _random_qpos(mj_model: mujoco.MjModel, B: int, seed: int = 0) -> np.ndarray:
  """B perturbed copies of qpos0 (hinge/slide joints jittered within range, free bodies nudged)."""
  rng = np.random.default_rng(seed)
  q = np.tile(mj_model.qpos0, (B, 1)).astype(np.float64)
  for j in range(mj_model.njnt):
    adr = mj_model.jnt_qposadr[j]
    jt = mj_model.jnt_type[j]
    if jt == mujoco.mjtJoint.mjJNT_FREE:
      q[:, adr:adr + 2] += rng.uniform(-0.05, 0.05, (B, 2))
    elif jt in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
      lo, hi = mj_model.jnt_range[j] if mj_model.jnt_limited[j] else (-0.5, 0.5)
      q[:, adr] = rng.uniform(lo, hi, B) * 0.5 + 0.5 * q[:, adr]
  return q


def batched_data(mj_model: mujoco.MjModel, B: int, seed: int = 0):
  """A batch of MJX states (kinematics done) with varied arm poses."""
  from mujoco import mjx
  mx = mjx.put_model(mj_model)
  d0 = mjx.make_data(mx)
  qpos = jnp.asarray(_random_qpos(mj_model, B, seed), jnp.float32)
  fk = jax.jit(jax.vmap(lambda q: mjx.kinematics(mx, d0.replace(qpos=q))))
  return jax.block_until_ready(fk(qpos))


def bench_render(mj_model: mujoco.MjModel, camera: str, B: int, height: int, width: int,
                 repeats: int = 5, *, rgb_only: bool = True, data=None,
                 **renderer_kwargs: Any) -> dict:
  """Frames/s of jit(vmap(render_rgb)) over B environments (one camera); compile time apart."""
  renderer = Renderer(mj_model, [camera], height, width, **renderer_kwargs)
  if data is None:
    data = batched_data(mj_model, B)
  fn = renderer.render_rgb if rgb_only else renderer.render
  f = jax.jit(jax.vmap(fn))
  t0 = time.perf_counter()
  compiled = f.lower(data).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(data))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(data))
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  return {"renderer": "jax_raycast", "camera": camera, "B": B, "height": height, "width": width,
          "batch_s": med, "frames_per_s": B / med, "compile_s": compile_s,
          "rgb_only": rgb_only, "shadows": bool(renderer_kwargs.get("shadows", False))}


_GL_CHILD = r"""
import json, sys, time
import mujoco
path, camera, height, width, repeats, fast = sys.argv[1:7]
height, width, repeats, fast = int(height), int(width), int(repeats), fast == "1"
m = mujoco.MjModel.from_binary_path(path)
if fast:
  m.vis.quality.shadowsize = 0
  m.vis.quality.offsamples = 0
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
r = mujoco.Renderer(m, height, width)
if fast:
  for f in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX):
    r.scene.flags[f] = False
for _ in range(5):
  r.update_scene(d, camera)
  r.render()
t0 = time.perf_counter()
for _ in range(repeats):
  r.update_scene(d, camera)
  r.render()
dt = time.perf_counter() - t0
print(json.dumps({"frames_per_s": repeats / dt}))
"""


def bench_mujoco_renderer(mj_model: mujoco.MjModel, camera: str, height: int, width: int,
                          repeats: int = 100, *, fast: bool = False,
                          gl_backends: tuple[str, ...] = ("egl", "osmesa"),
                          timeout_s: float = 300.0) -> dict:
  """Frames/s of mujoco.Renderer (one 1-thread OpenGL context, one state) on this machine.

  Runs in a child process per GL backend (MUJOCO_GL must be set before mujoco is imported):
  the first backend that works wins. fast=True turns shadows, reflections, skybox and
  multisampling off. frames_per_s is None, with the reasons, when no backend works.
  """
  import json
  import subprocess
  import sys
  import tempfile
  out: dict[str, Any] = {"renderer": "mujoco.Renderer", "camera": camera, "height": height,
                         "width": width, "fast": fast, "frames_per_s": None}
  errors = []
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "model.mjb")
    mujoco.mj_saveModel(mj_model, path, None)
    for gl in gl_backends:
      env = dict(os.environ, MUJOCO_GL=gl, PYOPENGL_PLATFORM=gl)
      try:
        res = subprocess.run(
            [sys.executable, "-c", _GL_CHILD, path, camera, str(height), str(width),
             str(repeats), "1" if fast else "0"],
            env=env, capture_output=True, text=True, timeout=timeout_s)
        lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
        if res.returncode == 0 and lines:
          out.update(json.loads(lines[-1]))
          out["MUJOCO_GL"] = gl
          return out
        errors.append(f"{gl}: rc={res.returncode} {res.stderr.strip().splitlines()[-1:]}")
      except Exception as e:  # noqa: BLE001  (report why GL is unavailable)
        errors.append(f"{gl}: {type(e).__name__}: {e}")
  out["error"] = "; ".join(errors)
  return out


def main():
  import argparse
  p = argparse.ArgumentParser()
  p.add_argument("--batches", default="1,64,256")
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--camera", default="agentview")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--shadows", action="store_true")
  p.add_argument("--no-gl", action="store_true")
  a = p.parse_args()
  m = load_scene()
  for b in [int(x) for x in a.batches.split(",")]:
    print(bench_render(m, a.camera, b, a.size, a.size, a.repeats, shadows=a.shadows), flush=True)
  if not a.no_gl:
    for fast in (False, True):
      print(bench_mujoco_renderer(m, a.camera, a.size, a.size, fast=fast), flush=True)


if __name__ == "__main__":
  main()
