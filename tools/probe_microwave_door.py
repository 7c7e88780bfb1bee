"""Does the door-closing skill finish libero_10 task 9 once the mug stands at the microwave's
opening? A diagnostic for the task-9 expert (none yet), run by hand:

  python tools/probe_microwave_door.py --ys=0.29,0.30 [--yaw=0] [--state=0] [--steps=250]

From LIBERO's evaluation state `--state`, the yellow-and-white mug is moved (turned `--yaw` degrees
about its body's axis, handle toward -y at 0) to stand on the microwave's floor with its body's
centre at world y = each of `--ys` (the floor's front edge is at y 0.270 in state 0; the body is
4.8-5.3 cm in radius), at its own x; then only `experts.close_door` acts, for `--steps` control
steps, all placements batched in one jit. Prints, every 25 steps, LIBERO's In(mug, heating region)
and Close(microwave), the mug's origin, how upright it stands (z of its axis) and the door's hinge.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from envs import registry  # noqa: E402
from envs.robots import panda  # noqa: E402
from envs.tasks import experts, libero_suite, predicates  # noqa: E402
from envs.tasks.spec import Predicate  # noqa: E402

MUG, MICROWAVE, REGION, FLOOR = "white_yellow_mug_1", "microwave_1", "microwave_1_heating_region", \
    "microwave_1_box4"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--ys", default="0.28,0.29,0.30,0.31")
  ap.add_argument("--yaw", type=float, default=0.0)
  ap.add_argument("--state", type=int, default=0)
  ap.add_argument("--steps", type=int, default=250)
  a = ap.parse_args()
  ys = [float(y) for y in a.ys.split(",")]
  env = registry.make("libero_10", image_size=32, cameras=(), task_ids=[9])
  spec, m = env.specs[0], env.mj_model
  args = (spec, m, env._contact_geoms, env._fixture_kinds)  # noqa: SLF001
  p_in = predicates.compile_predicate(Predicate("in", (MUG, REGION)), *args)
  p_close = predicates.compile_predicate(Predicate("close", (MICROWAVE,)), *args)
  door = experts._Door(env, predicates._Entity(MICROWAVE, *args))  # noqa: SLF001
  hinge = m.jnt_qposadr[door.joint]
  body = m.body(MUG).id
  qa = m.jnt_qposadr[m.body_jntadr[body]]
  staves = [i for i in range(m.ngeom) if (m.geom(i).name or "").startswith(f"{MUG}_stave")]
  s0 = env.reset_to(0, a.state)
  d0 = s0.pipeline_state
  floor_top = float(d0.geom_xpos[m.geom(FLOOR).id][2] + m.geom_size[m.geom(FLOOR).id][2])
  centre = np.asarray(d0.geom_xpos)[staves].mean(0)           # the body's axis, mid height
  origin, quat = np.asarray(d0.qpos[qa:qa + 3]), np.asarray(d0.qpos[qa + 3:qa + 7])
  table_z = float(origin[2])                                   # standing on the table
  rot = np.asarray(panda.rot_z(np.radians(a.yaw)))
  half = np.radians(a.yaw) / 2
  turned = libero_suite._quat_mul(jnp.array([np.cos(half), 0.0, 0.0, np.sin(half)]),  # noqa: SLF001
                                  jnp.asarray(quat))
  batch = []
  for y in ys:
    rel = rot @ (origin - centre)
    new = np.array([centre[0] + rel[0], y + rel[1], table_z + floor_top + 5e-4])
    qpos = d0.qpos.at[qa:qa + 3].set(new).at[qa + 3:qa + 7].set(turned)
    batch.append(s0.replace(pipeline_state=d0.replace(qpos=qpos, qvel=jnp.zeros_like(d0.qvel))))
  batch = jax.tree.map(lambda *x: jnp.stack(x), *batch)
  print(f"state {a.state}: floor top z {floor_top:.3f} (table 0), mug on the table at origin "
        f"{np.round(origin, 3)}, body axis {np.round(centre[:2], 3)}; yaw {a.yaw}", flush=True)

  def step(st, _):
    st = env.step(st, experts.close_door(env, st, door))
    d = st.pipeline_state
    return st, (p_in(d), p_close(d), d.qpos[qa:qa + 3], d.xmat[body].reshape(3, 3)[2, 2],
                d.qpos[hinge])

  run = jax.jit(lambda b: jax.lax.scan(jax.vmap(step), b, None, length=25))
  t0, b = time.time(), batch
  for k in range(-(-a.steps // 25)):
    b, out = run(b)
    pin, pcl, pos, up, q = (np.asarray(x)[-1] for x in out)
    for i, y in enumerate(ys):
      print(f"t={25 * (k + 1):3d} centre y0={y:.3f}: in={bool(pin[i])} close={bool(pcl[i])} "
            f"origin={np.round(pos[i], 3)} upright={up[i]:.3f} hinge={q[i]:+.3f}", flush=True)
  print(f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
  main()
