"""LiberoSuite: the tasks of a LIBERO suite in ONE MJX scene, so a batch mixes tasks in one jit.

Design (static shapes across tasks): the scene holds the union of the suite's objects and fixtures
(an entity shared by several tasks, such as `akita_black_bowl_1`, is one body). A task's own
entities are placed by its initial state; the others are parked on the table plane 4 m behind the
agentview camera and re-pinned after every control step, so they never move, never touch the
task's entities and never show in agentview. A fixture's pose is per environment too: each
environment steps a model whose fixture root `body_pos` / `body_quat` are its own (state.info
["fixture_pose"]; MJX vmaps over those model fields), since MJX's mocap bodies cannot carry the
jointed drawers, doors and knobs (their children do not follow the mocap pose).
The goal of every task is compiled once; an environment evaluates its task's goal (under vmap all
goals run, masked: they are a few contact and position tests). Cost: the union's contact pairs on
every step (libero_spatial and libero_goal share one scene, so nothing is parked there).

Initial states (ARCHITECTURE: `eval_reset` draws held-out evaluation states):
  evaluation  LIBERO's 50 initial states per task, converted (envs/tasks/data): `eval_reset(rng)`
              draws (task, state) uniformly; `reset_to(task, index)` gives one exactly.
  training    `reset(rng)`: a uniformly drawn task and one of its evaluation states as a template,
              with every entity that LIBERO places in a table region re-drawn in that region
              (position uniform, yaw in the region's yaw range, or any yaw without one), entities
              that rest on or in it moved along, a few tries to avoid overlaps. A separate random
              stream; never equal to an evaluation state (the positions are continuous draws).
  protocol="reference" makes `reset` draw evaluation states too (the reference trains and
  evaluates on the same 50: for comparison only).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from envs import base, schema
from envs.robots import panda
from envs.tasks import builder as builder_lib
from envs.tasks import libero_data, predicates, pretrain_tasks
from envs.tasks.libero_env import (CAMERAS, RANDOMIZATION_OPTIONS, LiberoTask, Randomization,
                                   physics_rule, split_options)
from envs.tasks.spec import TaskSpec

PARK_X = 4.0          # parked entities: on the table plane, this far in front of the table centre
PARK_DY = 0.45        # spacing of parked entities along y
OVERLAP_TRIES = 8     # joint re-draws of a training layout to avoid overlapping footprints
PROTOCOLS = ("held_out", "reference")
SUITE_TASKS = 10      # each of LIBERO's four suites holds ten tasks


# A suite's options (the four suite factories). Every PhysicsConfig and Randomization field is a
# flat option of the same name (`--config.env.kwargs.timestep=0.002`); render_kwargs (renderer
# internals) is Python-only. num_steps_wait: LIBERO's own is 10 for every task; past 500 no-op
# steps (25 s) a reset only burns compute.
OPTIONS = schema.Schema(
    options=(
        schema.Choice("protocol", "held_out", "held_out: train on re-drawn layouts, evaluate on "
                      "LIBERO's 50; reference: both on LIBERO's 50", choices=PROTOCOLS),
        schema.Int("num_steps_wait", 10, "no-op control steps inside reset (LIBERO's warm-up)",
                   lo=0, hi=500),
        schema.IntTuple("task_ids", (), "only these tasks of the suite, re-indexed 0.. in this "
                        "order (): all ten", lo=0, hi=SUITE_TASKS - 1),
        schema.Bool("shadows", False, "hard shadows in the rendered images"),
    ) + builder_lib.PHYSICS_OPTIONS + RANDOMIZATION_OPTIONS,
    cameras=CAMERAS, rules=(physics_rule,), python_only=("render_kwargs",))


def _init_states(spec: TaskSpec) -> dict[str, np.ndarray]:
  """The evaluation states of a task: LIBERO's converted 50 for one of the 40, the procedural ones
  (envs.tasks.pretrain_tasks.init_states) for a pretraining task."""
  if spec.suite == pretrain_tasks.SUITE:
    return pretrain_tasks.init_states(spec)
  return libero_data.init_states(spec)


def union_spec(specs: Sequence[TaskSpec]) -> TaskSpec:
  """One scene with every object and fixture of `specs` (same name = same entity; its category
  must agree across tasks)."""
  objects, fixtures = {}, {}
  for s in specs:
    for o in s.objects:
      if o.name in objects and objects[o.name] != o:
        raise ValueError(f"object {o.name!r} differs between tasks of one scene "
                         f"({objects[o.name].category} vs {o.category})")
      objects.setdefault(o.name, o)
    for f in s.fixtures:
      if f.name in fixtures and fixtures[f.name] != f:
        raise ValueError(f"fixture {f.name!r} differs between tasks of one scene")
      fixtures.setdefault(f.name, f)
  suite = specs[0].suite if len({s.suite for s in specs}) == 1 else "mixed"
  # fixtures are built parked; each environment moves its task's fixtures into place
  parked = tuple(dataclasses.replace(f, pos=park_fixture(j, len(fixtures)), yaw=0.0)
                 for j, f in enumerate(fixtures.values()))
  return TaskSpec(name=f"{suite}_scene", language="", objects=tuple(objects.values()), regions=(),
                  init=(), goal=(), fixtures=parked, suite=suite,
                  max_steps=max(s.max_steps for s in specs),
                  max_steps_rl=max(s.max_steps_rl for s in specs),
                  groups=tuple(tuple(e.name for e in s.objects + s.fixtures) for s in specs),
                  relations=_relations(specs), robot_base=specs[0].robot_base, table=specs[0].table)


def _relations(specs: Sequence[TaskSpec]) -> tuple[tuple[str, str], ...]:
  """(object, entity) pairs that an On / In of some task's init or goal relates (a site names its
  owner: `wooden_cabinet_1_top_region` -> `wooden_cabinet_1`)."""
  out = set()
  for s in specs:
    names = [e.name for e in s.objects + s.fixtures]
    for p in s.init + s.goal:
      if p.name not in ("on", "in") or len(p.args) != 2:
        continue
      owner = [n for n in names if p.args[1] == n or p.args[1].startswith(n + "_")]
      if owner:
        out.add((p.args[0], max(owner, key=len)))
  return tuple(sorted(out))


def park_fixture(j: int, n: int) -> tuple[float, float, float]:
  return (PARK_X + 1.5, (j - n / 2) * 1.0, 0.0)


def _quat_mul(a: jax.Array, b: jax.Array) -> jax.Array:
  aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
  bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
  return jnp.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                    aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


@dataclasses.dataclass(frozen=True)
class _Tables:
  """Per (task, evaluation state) arrays gathered at reset (numpy, closed over by jit)."""
  qpos: np.ndarray          # f32[K, N, nq]
  park: np.ndarray          # f32[nq]  every object at its parking pose (robot and joints at home)
  fpos: np.ndarray          # f32[K, N, F, 3]  fixture root poses (table frame)
  fquat: np.ndarray         # f32[K, N, F, 4]
  base: np.ndarray          # f32[K, 3]  the arm's base (LIBERO mounts it per table)
  cam_pos: np.ndarray       # f32[K, 3]  the agentview camera (LIBERO poses it per table)
  cam_quat: np.ndarray      # f32[K, 4]
  active: np.ndarray        # bool[K, n_objects]    the task's own objects (others parked)
  # training re-draw, per task and entity slot (objects then fixtures of the union)
  mode: np.ndarray          # i32[K, E]  0 keep, 1 re-draw in a region, 2 ride on `parent`
  parent: np.ndarray        # i32[K, E]  entity slot it rests on / in (mode 2), else -1
  lo: np.ndarray            # f32[K, E, 2]  region box (mode 1)
  hi: np.ndarray            # f32[K, E, 2]
  yaw_lo: np.ndarray        # f32[K, E]
  yaw_hi: np.ndarray        # f32[K, E]
  turn: np.ndarray          # bool[K, E]  re-draw the yaw (a region with a yaw range), else keep it
  radius: np.ndarray        # f32[E]  footprint radius for the overlap test


class LiberoSuite(LiberoTask):
  """The tasks of one LIBERO suite (or any list of TaskSpecs with converted initial states) as
  one env; obs["task_id"] is the task's index in the suite (`instructions` holds its language).

  Args:
    suite: "libero_spatial" | "libero_object" | "libero_goal" | "libero_10", or TaskSpecs.
    task_ids: restrict to these tasks of the suite (default: all 10); task ids are re-indexed
      0..len-1 in the given order.
    protocol: "held_out" (train on re-drawn layouts, evaluate on LIBERO's 50) or "reference"
      (train and evaluate on LIBERO's 50, as the reference implementation does).
    num_steps_wait: no-op control steps run inside reset (gripper open, arm holding), LIBERO's
      warm-up: its stored initial states hold objects a few cm above where they rest, and they
      drop during these steps (default: the tasks' own, 10).
    Other arguments as LiberoTask.
  """

  def __init__(self, suite: str | Sequence[TaskSpec] = "libero_spatial",
               cameras: Sequence[str] = ("agentview",), image_size: tuple[int, int] = (128, 128),
               task_ids: Optional[Sequence[int]] = None, protocol: str = "held_out",
               num_steps_wait: Optional[int] = None,
               physics: builder_lib.PhysicsConfig = builder_lib.PhysicsConfig(),
               randomization: Randomization = Randomization(), shadows: bool = False,
               render_kwargs: Optional[dict] = None):
    name = suite if isinstance(suite, str) else "LiberoSuite"
    given = dict(protocol=protocol, shadows=shadows)   # the flag path's checks (envs.schema)
    if num_steps_wait is not None:
      given["num_steps_wait"] = num_steps_wait
    if task_ids is not None:
      given["task_ids"] = task_ids
    OPTIONS.check(given, name, fill=False)
    OPTIONS.check_cameras(cameras, name)
    specs = list(libero_data.tasks(suite) if isinstance(suite, str) else suite)
    if task_ids:   # None or (): every task
      bad = [t for t in task_ids if not 0 <= t < len(specs)]
      if bad:
        raise schema.OptionError("task_ids", tuple(task_ids),
                                 f"each must be in [0, {len(specs) - 1}] (not {bad})")
      specs = [specs[t] for t in task_ids]
    self._specs = tuple(specs)
    self._protocol = protocol
    waits = {s.num_steps_wait for s in specs}
    self._wait = int(num_steps_wait if num_steps_wait is not None else max(waits))
    union = union_spec(specs)
    super().__init__(union, cameras=(), image_size=image_size, physics=physics,
                     randomization=randomization, instructions=[s.language for s in specs])
    m = self.mj_model
    self._goals = [predicates.make_goal_fn(s, m, self._contact_geoms, self._fixture_kinds)
                   for s in specs]
    self._fixture_bodies = np.array([m.body(f.name).id for f in union.fixtures], np.int32)
    self._agentview = m.camera("agentview").id
    self._tables = self._build_tables(union)
    self._park = self._tables.park
    # the object (union index) owning each qpos / qvel entry, -1 for the robot and fixture joints
    self._qpos_owner = -np.ones(m.nq, np.int32)
    self._qvel_owner = -np.ones(m.nv, np.int32)
    for j, o in enumerate(union.objects):
      a = self._obj_qadr[o.name]
      va = int(m.jnt_dofadr[m.joint(f"{o.name}_joint").id])
      self._qpos_owner[a:a + 7] = j
      self._qvel_owner[va:va + 6] = j
    self._cameras = tuple(cameras)
    if self._cameras:
      kw = dict(render_kwargs or {})
      kw.setdefault("calibration_data", self._calibration_states())
      self._renderer = self._make_renderer(shadows, kw)

  # ----------------------------------------------------------------------------------------------
  # Tables.

  def _build_tables(self, union: TaskSpec) -> _Tables:
    m = self.mj_model
    objs = [o.name for o in union.objects]
    fxs = [f.name for f in union.fixtures]
    ents = objs + fxs
    slot = {n: i for i, n in enumerate(ents)}
    fslot = {n: j for j, n in enumerate(fxs)}
    base_qpos = np.array(jax.device_get(self._data0.qpos), np.float64)
    base_fpos = np.array([m.body(n).pos for n in fxs], np.float64).reshape(len(fxs), 3)
    base_fquat = np.array([m.body(n).quat for n in fxs], np.float64).reshape(len(fxs), 4)
    # parked poses: upright as in the first task that uses the object (LIBERO's orientation;
    # some meshes are authored lying down), 10 cm above where that state holds it (clear of the
    # plane: not every converted state is, see the libero_object note in FORMAT.md)
    for j, n in enumerate(objs):
      a = self._obj_qadr[n]
      z, quat = self._built.objects[n].rest_height + 0.1, (1, 0, 0, 0)
      for s in self._specs:
        init = _init_states(s)
        if n in init["entities"]:
          p0 = init["pose"][0, init["entities"].index(n)]
          z, quat = float(p0[2]) + 0.1, tuple(p0[3:])
          break
      base_qpos[a:a + 7] = (PARK_X, (j - len(objs) / 2) * PARK_DY, z, *quat)
    jadr = {m.joint(j).name: int(m.jnt_qposadr[j]) for j in range(m.njnt)}
    K, E = len(self._specs), len(ents)
    n_states = min(len(_init_states(s)["pose"]) for s in self._specs)
    qpos = np.tile(base_qpos, (K, n_states, 1))
    mpos = np.tile(base_fpos, (K, n_states, 1, 1))
    mquat = np.tile(base_fquat, (K, n_states, 1, 1))
    active = np.zeros((K, len(objs)), bool)
    mode = np.zeros((K, E), np.int32)
    parent = -np.ones((K, E), np.int32)
    lo = np.zeros((K, E, 2), np.float32)
    hi = np.zeros((K, E, 2), np.float32)
    ylo = np.zeros((K, E), np.float32)
    yhi = np.zeros((K, E), np.float32)
    turn = np.zeros((K, E), bool)
    for k, s in enumerate(self._specs):
      init = _init_states(s)
      pose = init["pose"][:n_states]
      for e, name in enumerate(init["entities"]):
        if name in self._obj_qadr:
          a = self._obj_qadr[name]
          qpos[k, :, a:a + 7] = pose[:, e]
          active[k, objs.index(name)] = True
        else:
          mpos[k, :, fslot[name]] = pose[:, e, :3]
          mquat[k, :, fslot[name]] = pose[:, e, 3:]
      for c, jn in enumerate(init["joint_names"]):
        if jn in jadr:
          qpos[k, :, jadr[jn]] = init["joint_qpos"][:n_states, c]
      regions = {r.name: r for r in s.regions}
      for p in s.init:
        if p.name not in ("on", "in") or p.args[0] not in slot:
          continue
        e, target = slot[p.args[0]], p.args[1]
        if target in regions:
          r = regions[target]
          mode[k, e] = 1
          lo[k, e], hi[k, e] = (r.x0, r.y0), (r.x1, r.y1)
          if r.yaw is not None:
            ylo[k, e], yhi[k, e] = r.yaw
            turn[k, e] = True
        else:
          owner = [n for n in ents if target == n or target.startswith(n + "_")]
          if owner:
            mode[k, e] = 2
            parent[k, e] = slot[max(owner, key=len)]
    radius = np.zeros(E, np.float32)
    for n, e in slot.items():
      b = self._built.objects.get(n) or self._built.fixtures[n]
      pr = b.params
      if "half" in pr:
        radius[e] = float(np.hypot(pr["half"][0], pr["half"][1]))
      else:
        radius[e] = float(pr.get("radius", 0.05))
    base = np.array([s.robot_base for s in self._specs], np.float32)
    cam_pos, cam_quat = [], []
    for s in self._specs:
      pos, axes, _ = builder_lib.agentview(s.table)
      x, y = np.asarray(axes[:3]), np.asarray(axes[3:])
      q = np.zeros(4)
      mujoco.mju_mat2Quat(q, np.stack([x, y, np.cross(x, y)], 1).ravel())
      cam_pos.append(pos)
      cam_quat.append(q)
    return _Tables(qpos.astype(np.float32), base_qpos.astype(np.float32), mpos.astype(np.float32),
                   mquat.astype(np.float32), base, np.array(cam_pos, np.float32),
                   np.array(cam_quat, np.float32),
                   active, mode, parent, lo, hi, ylo, yhi, turn, 0.8 * radius)

  def _calibration_states(self, per_task: int = 12):
    """Evaluation states (a few per task), to plan the renderer's per-tile capacity: C MuJoCo
    kinematics on a model copy with each state's fixture poses."""
    m, t = self.mj_model, self._tables
    mc = copy.copy(m)
    ids = self._fixture_bodies
    out = []
    rng = np.random.default_rng(0)
    arm = [int(m.jnt_qposadr[m.joint(j).id]) for j in panda.ARM_JOINTS + panda.FINGER_JOINTS]
    arm_ids = [m.joint(j).id for j in panda.ARM_JOINTS + panda.FINGER_JOINTS]
    for k in range(t.qpos.shape[0]):
      for n, i in enumerate(np.linspace(0, t.qpos.shape[1] - 1, per_task).astype(int)):
        mc.body_pos[ids] = t.fpos[k, i]
        mc.body_quat[ids] = t.fquat[k, i]
        mc.body_pos[self._link0] = t.base[k]
        mc.cam_pos[self._agentview] = t.cam_pos[k]
        mc.cam_quat[self._agentview] = t.cam_quat[k]
        d = mujoco.MjData(mc)
        d.qpos[:] = t.qpos[k, i]
        if n % 2:      # half of them with the arm anywhere in its joint ranges
          lo, hi = m.jnt_range[arm_ids, 0], m.jnt_range[arm_ids, 1]
          d.qpos[arm] = rng.uniform(lo, hi)
        d.mocap_pos[:] = jax.device_get(self._data0.mocap_pos)
        d.mocap_quat[:] = jax.device_get(self._data0.mocap_quat)
        mujoco.mj_kinematics(mc, d)
        mujoco.mj_camlight(mc, d)
        out.append(d)   # the planner reads the computed poses (geom_xpos ...) as they are
    return out

  # ----------------------------------------------------------------------------------------------
  # Contract.

  @property
  def specs(self) -> tuple[TaskSpec, ...]:
    return self._specs

  @property
  def num_eval_states(self) -> int:
    return int(self._tables.qpos.shape[1])

  def _model(self, state: base.State):
    return self._model_at(state.info["fixture_pose"], state.info["task"])

  def _model_at(self, fixture_pose: jax.Array, task: jax.Array):
    """The model of one environment: its fixtures' poses, its task's arm base and camera."""
    ids = self._fixture_bodies
    m = self.mjx_model
    t = self._tables
    body_pos = jnp.asarray(m.body_pos).at[ids].set(fixture_pose[:, :3])
    body_pos = body_pos.at[self._link0].set(jnp.asarray(t.base)[task])
    cam = self._agentview
    return m.replace(body_pos=body_pos,
                     body_quat=jnp.asarray(m.body_quat).at[ids].set(fixture_pose[:, 3:]),
                     cam_pos=jnp.asarray(m.cam_pos).at[cam].set(jnp.asarray(t.cam_pos)[task]),
                     cam_quat=jnp.asarray(m.cam_quat).at[cam].set(jnp.asarray(t.cam_quat)[task]))

  def _start(self, k: jax.Array, qpos: jax.Array, mpos: jax.Array, mquat: jax.Array,
             rng: jax.Array) -> base.State:
    fixture_pose = jnp.concatenate([mpos, mquat], -1)
    data = self._data0.replace(qpos=qpos)
    data = mjx_kinematics(self._model_at(fixture_pose, k), data)
    # the controller's goal: the home end-effector pose over this task's base
    data = data.replace(mocap_pos=data.mocap_pos.at[0].set(data.site_xpos[self._tcp]))
    zero = jnp.zeros((), jnp.float32)
    success = jnp.asarray(False)
    info = {"success": success, "unstable": jnp.asarray(False),
            "render": self._sample_render_params(rng), "task": k, "fixture_pose": fixture_pose,
            "active": jnp.asarray(self._tables.active)[k]}
    info.update(self._grasp_info(None, data, None, None))
    state = base.State(data, self._state_obs(data, k), zero, zero,
                       {"success": success.astype(jnp.float32)}, info)
    return self.observe(self._warm_up(state))

  def _warm_up(self, state: base.State) -> base.State:
    """LIBERO's no-op warm-up (`num_steps_wait` control steps of [0, 0, 0, 0, 0, 0, -1]): the
    objects settle. Rewards and success during it are discarded (LIBERO's evaluators skip them)."""
    if not self._wait:
      return state
    noop = jnp.zeros(self.action_size, jnp.float32).at[6].set(-1.0)
    model = self._model(state)

    def body(data, _):
      d = self.physics_steps(self.apply_action(data, noop, model), self._substeps, model)
      return self._after_physics(state, d), None

    data, _ = jax.lax.scan(body, state.pipeline_state, None, length=self._wait)
    return state.replace(pipeline_state=data, obs={**state.obs, **self._state_obs(data, state.info["task"])})

  def reset_to(self, task: jax.Array, index: jax.Array, rng: Optional[jax.Array] = None) -> base.State:
    """Evaluation state `index` (0..49) of task `task`, exactly as converted from LIBERO."""
    t = self._tables
    k, i = jnp.asarray(task, jnp.int32), jnp.asarray(index, jnp.int32)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return self._start(k, jnp.asarray(t.qpos)[k, i], jnp.asarray(t.fpos)[k, i],
                       jnp.asarray(t.fquat)[k, i], rng)

  def eval_reset(self, rng: jax.Array) -> base.State:
    return self._start(*self.draw(rng, evaluation=True))

  def reset(self, rng: jax.Array) -> base.State:
    return self._start(*self.draw(rng))

  def reset_task(self, task: jax.Array, rng: jax.Array) -> base.State:
    """A training reset of one given task (a re-drawn layout; under protocol="reference" one of its
    evaluation states): what demonstrations are recorded from."""
    k = jnp.asarray(task, jnp.int32)
    rng = jax.random.fold_in(rng, 0x7EA1)     # the training stream, as `draw`
    k_idx, k_lay, k_r = jax.random.split(rng, 3)
    i = jax.random.randint(k_idx, (), 0, self.num_eval_states)
    t = self._tables
    if self._protocol == "reference":
      return self._start(k, jnp.asarray(t.qpos)[k, i], jnp.asarray(t.fpos)[k, i],
                         jnp.asarray(t.fquat)[k, i], k_r)
    return self._start(k, *self._redraw(k, i, k_lay), k_r)

  def draw(self, rng: jax.Array, evaluation: bool = False):
    """The initial layout a reset starts from, before the warm-up: (task, qpos, fixture
    positions, fixture quaternions, render key). Evaluation draws one of LIBERO's converted states;
    training draws a re-drawn layout (module doc) from a separate stream, unless the protocol is
    "reference"."""
    t = self._tables
    if evaluation or self._protocol == "reference":
      k_task, k_idx, k_r = jax.random.split(rng, 3)
      k = jax.random.randint(k_task, (), 0, len(self._specs))
      i = jax.random.randint(k_idx, (), 0, self.num_eval_states)
      return k, jnp.asarray(t.qpos)[k, i], jnp.asarray(t.fpos)[k, i], jnp.asarray(t.fquat)[k, i], k_r
    rng = jax.random.fold_in(rng, 0x7EA1)     # not eval_reset's stream
    k_task, k_idx, k_lay, k_r = jax.random.split(rng, 4)
    k = jax.random.randint(k_task, (), 0, len(self._specs))
    i = jax.random.randint(k_idx, (), 0, self.num_eval_states)
    qpos, mpos, mquat = self._redraw(k, i, k_lay)
    return k, qpos, mpos, mquat, k_r

  def _entity_pose(self, qpos, mpos, mquat):
    """[E, 3] positions and [E, 4] quaternions of the union's entities (objects, then fixtures)."""
    ps, qs = [], []
    for o in self._spec.objects:
      a = self._obj_qadr[o.name]
      ps.append(qpos[a:a + 3])
      qs.append(qpos[a + 3:a + 7])
    for j in range(len(self._spec.fixtures)):
      ps.append(mpos[j])
      qs.append(mquat[j])
    return jnp.stack(ps), jnp.stack(qs)

  def _redraw(self, k: jax.Array, i: jax.Array, rng: jax.Array):
    """A training layout: template (k, i) with region-placed entities re-drawn (see module doc)."""
    t = self._tables
    qpos = jnp.asarray(t.qpos)[k, i]
    mpos = jnp.asarray(t.fpos)[k, i]
    mquat = jnp.asarray(t.fquat)[k, i]
    pos, quat = self._entity_pose(qpos, mpos, mquat)
    mode, parent = jnp.asarray(t.mode)[k], jnp.asarray(t.parent)[k]
    lo, hi = jnp.asarray(t.lo)[k], jnp.asarray(t.hi)[k]
    ylo, yhi = jnp.asarray(t.yaw_lo)[k], jnp.asarray(t.yaw_hi)[k]
    E = pos.shape[0]
    yaw0 = jnp.arctan2(2 * (quat[:, 0] * quat[:, 3] + quat[:, 1] * quat[:, 2]),
                       1 - 2 * (quat[:, 2] ** 2 + quat[:, 3] ** 2))
    placed = mode == 1
    turn = jnp.asarray(t.turn)[k]
    radius = jnp.asarray(t.radius)

    def draw(key):
      kxy, kyaw = jax.random.split(key)
      xy = jax.random.uniform(kxy, (E, 2), minval=lo, maxval=hi)
      yaw = jax.random.uniform(kyaw, (E,), minval=ylo, maxval=yhi)
      xy = jnp.where(placed[:, None], xy, pos[:, :2])
      dyaw = jnp.where(placed & turn, yaw - yaw0, 0.0)
      return xy, dyaw

    def overlaps(xy):
      d = jnp.linalg.norm(xy[:, None] - xy[None], axis=-1)
      both = placed[:, None] & placed[None] & ~jnp.eye(E, dtype=bool)
      return jnp.any(both & (d < radius[:, None] + radius[None]))

    keys = jax.random.split(rng, OVERLAP_TRIES)
    xys, dyaws = jax.vmap(draw)(keys)
    bad = jax.vmap(overlaps)(xys)
    pick = jnp.where(jnp.all(bad), OVERLAP_TRIES - 1, jnp.argmax(~bad))
    xy, dyaw = xys[pick], dyaws[pick]
    # riders follow their support's motion (two passes: a bowl on cookies on ... is two deep)
    for _ in range(2):
      p = jnp.maximum(parent, 0)
      rel = pos[:, :2] - pos[p, :2]
      c, s = jnp.cos(dyaw[p]), jnp.sin(dyaw[p])
      moved = xy[p] + jnp.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], -1)
      ride = mode == 2
      xy = jnp.where(ride[:, None], moved, xy)
      dyaw = jnp.where(ride, dyaw[p], dyaw)
    half = 0.5 * dyaw
    qz = jnp.stack([jnp.cos(half), jnp.zeros_like(half), jnp.zeros_like(half), jnp.sin(half)], -1)
    new_quat = _quat_mul(qz, quat)
    new_pos = pos.at[:, :2].set(xy)
    m = self.mj_model
    for e, o in enumerate(self._spec.objects):
      a = self._obj_qadr[o.name]
      qpos = qpos.at[a:a + 3].set(new_pos[e]).at[a + 3:a + 7].set(new_quat[e])
    n_obj = len(self._spec.objects)
    mpos = new_pos[n_obj:]
    mquat = new_quat[n_obj:]
    return qpos, mpos, mquat

  @property
  def goal_targets(self) -> tuple[tuple[str, ...], ...]:
    return tuple(predicates.goal_targets(s) for s in self._specs)

  def _task_index(self, state: base.State) -> jax.Array:
    return state.info["task"]

  def _success(self, state: base.State, data) -> jax.Array:
    goals = jnp.stack([g(data) for g in self._goals])
    return goals[state.info["task"]]

  def _after_physics(self, state: base.State, data):
    """Parked objects back to their parking poses, at rest (one gather per step: each qpos / qvel
    entry's owning object, precomputed)."""
    active = jnp.concatenate([state.info["active"], jnp.ones(1, bool)])   # index -1: not an object
    return data.replace(qpos=jnp.where(active[self._qpos_owner], data.qpos, jnp.asarray(self._park)),
                        qvel=jnp.where(active[self._qvel_owner], data.qvel, 0.0))


def mjx_kinematics(model, data):
  return mjx.camlight(model, mjx.kinematics(model, data))


def make_suite(image_size: int = 128, cameras: Sequence[str] = ("agentview",), suite: str = "libero_spatial",
               **kwargs) -> LiberoSuite:
  """envs.registry factory: a whole LIBERO suite in one env (flat options: OPTIONS)."""
  o = split_options(OPTIONS.check(kwargs, suite))
  return LiberoSuite(suite, cameras=cameras, image_size=(image_size, image_size), **o)


@schema.declares(OPTIONS)
def make_libero_spatial(**kw) -> LiberoSuite:
  return make_suite(suite="libero_spatial", **kw)


@schema.declares(OPTIONS)
def make_libero_object(**kw) -> LiberoSuite:
  return make_suite(suite="libero_object", **kw)


@schema.declares(OPTIONS)
def make_libero_goal(**kw) -> LiberoSuite:
  return make_suite(suite="libero_goal", **kw)


@schema.declares(OPTIONS)
def make_libero_10(**kw) -> LiberoSuite:
  return make_suite(suite="libero_10", **kw)


# libero_pretrain's options: the suite's, with the generator's instead of task_ids.
PRETRAIN_OPTIONS = schema.Schema(
    options=(
        schema.Int("num_tasks", 8, "procedural pretraining tasks (envs.tasks.pretrain_tasks)",
                   lo=1, hi=pretrain_tasks.MAX_TASKS),
        schema.Int("seed", 0, "seed of the task generator (not of the resets)", lo=0, hi=2**31 - 1),
    ) + tuple(o for o in OPTIONS.options if o.name != "task_ids"),
    cameras=CAMERAS, rules=(physics_rule,), python_only=("render_kwargs",))


@schema.declares(PRETRAIN_OPTIONS)
def make_libero_pretrain(image_size: int = 128, cameras: Sequence[str] = ("agentview",),
                         **kwargs) -> LiberoSuite:
  """envs.registry factory: `num_tasks` procedural pretraining tasks (disjoint from LIBERO's 40)
  in one scene; evaluation states are the generator's held-out draws (pretrain_tasks.init_states)."""
  o = split_options(PRETRAIN_OPTIONS.check(kwargs, "libero_pretrain"))
  specs = pretrain_tasks.pretrain_specs(o.pop("num_tasks"), o.pop("seed"))
  return LiberoSuite(specs, cameras=cameras, image_size=(image_size, image_size), **o)
