"""LiberoTask: one LIBERO-style task as a pure, jittable, vmappable MJX env (the envs.base contract).

State.pipeline_state is the mjx.Data, and holds ALL of the controller's state too: the OSC goal pose
lives in mocap_pos/mocap_quat[0] and the gripper's command level and direction in userdata[0:2], so
brax's auto-reset (which swaps pipeline_state and obs only) restarts the controller with the arm.

Control is LIBERO's (envs/robots/panda.py): each 20 Hz action sets an OSC_POSE goal relative to the
current end-effector pose; every physics substep computes operational-space torques toward it; the
gripper level ramps by the action's sign (-1 open, +1 close, 0 hold).
"""

from __future__ import annotations

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
from envs.tasks import predicates
from envs.tasks.spec import BOWL_ON_PLATE, TaskSpec


@dataclasses.dataclass(frozen=True)
class Randomization:
  """Domain-randomisation options applied at reset (per environment).

  Object poses are always drawn uniformly in their placement regions (LIBERO's init). The rest are
  off by default: colour jitter (added to object RGB), light-direction jitter (radians-ish, added to
  the unit light direction), camera position jitter (metres, per camera). Friction needs a batched
  model: see envs.wrappers.DomainRandomizationWrapper.
  """
  color_jitter: float = 0.0
  light_jitter: float = 0.0
  camera_jitter: float = 0.0

  def __post_init__(self):
    for o in RANDOMIZATION_OPTIONS:   # the same checks as the flag path
      o.check(getattr(self, o.name))


# Randomization's fields as env options. Bounds: RGB lives in [0, 1]; a light jitter of 1 already
# turns the unit light direction anywhere; half a metre moves a camera off the table.
RANDOMIZATION_OPTIONS = (
    schema.Float("color_jitter", 0.0, "reset-time jitter added to object RGB", lo=0.0, hi=1.0),
    schema.Float("light_jitter", 0.0, "reset-time jitter added to the unit light direction",
                 lo=0.0, hi=1.0),
    schema.Float("camera_jitter", 0.0, "reset-time camera position jitter, m", lo=0.0, hi=0.5),
)
RANDOMIZATION_FIELDS = tuple(o.name for o in RANDOMIZATION_OPTIONS)
CAMERAS = ("agentview", "wrist")   # LIBERO's agentview and eye-in-hand cameras


def physics_rule(o: dict) -> None:
  builder_lib.PhysicsConfig(**{k: o[k] for k in builder_lib.PHYSICS_FIELDS})   # timestep | period


def split_options(o: dict) -> dict:
  """Flat options (flags) -> constructor arguments: the PhysicsConfig and Randomization fields
  become `physics` and `randomization`; the rest pass as they are."""
  rest = {k: v for k, v in o.items()
          if k not in builder_lib.PHYSICS_FIELDS and k not in RANDOMIZATION_FIELDS}
  return {**rest,
          "physics": builder_lib.PhysicsConfig(**{k: o[k] for k in builder_lib.PHYSICS_FIELDS}),
          "randomization": Randomization(**{k: o[k] for k in RANDOMIZATION_FIELDS})}


# libero_bowl_on_plate's options. Every PhysicsConfig and Randomization field is a flat option of
# the same name (`--config.env.kwargs.timestep=0.002`); render_kwargs (renderer internals: tile,
# capacities, calibration states) is Python-only.
OPTIONS = schema.Schema(
    options=(
        schema.Int("settle_substeps", 0, "physics substeps run at reset (0: placed at rest)",
                   lo=0, hi=2000),
        schema.Bool("shadows", False, "hard shadows in the rendered images"),
        schema.Choice("layout", "wide", "initial-layout spread: wide (16 cm regions, any bowl yaw) "
                      "or libero (LIBERO's: each object within a 3 cm square, yaw fixed)",
                      choices=("wide", "libero")),
    ) + builder_lib.PHYSICS_OPTIONS + RANDOMIZATION_OPTIONS,
    cameras=CAMERAS, rules=(physics_rule,), python_only=("render_kwargs",))


class LiberoTask(base.Env):
  """A LIBERO-style tabletop task on the Panda.

  Args:
    spec: the task (envs.tasks.spec.TaskSpec); default "pick up the black bowl and place it on the plate".
    cameras: camera names rendered into obs["image_{name}"]; "agentview" (third person) and/or
      "wrist" (LIBERO's eye_in_hand). () = no images (physics only).
    image_size: (H, W).
    physics: timestep / solver (envs.tasks.builder.PhysicsConfig).
    randomization: reset-time domain randomisation (Randomization).
    settle_substeps: physics substeps run at reset (0: objects are placed exactly at rest; only
      kinematics runs, which keeps reset cheap).
    task_id: the value of obs["task_id"] (index into `instructions`).
    instructions: the language table obs["task_id"] indexes (default: this task's instruction only).
    shadows, render_kwargs: passed to envs.render.Renderer (e.g. tile / max_candidates).
  """

  def __init__(self, spec: TaskSpec = BOWL_ON_PLATE, cameras: Sequence[str] = ("agentview",),
               image_size: tuple[int, int] = (128, 128),
               physics: builder_lib.PhysicsConfig = builder_lib.PhysicsConfig(),
               randomization: Randomization = Randomization(), settle_substeps: int = 0,
               task_id: int = 0, instructions: Optional[Sequence[str]] = None,
               shadows: bool = False, render_kwargs: Optional[dict] = None):
    # direct Python construction gets the flag path's checks (envs.schema)
    OPTIONS.check(dict(settle_substeps=settle_substeps, shadows=shadows), spec.name, fill=False)
    OPTIONS.check_cameras(cameras, spec.name)
    if not isinstance(physics, builder_lib.PhysicsConfig):
      raise schema.OptionError("physics", physics, "must be an envs.tasks.builder.PhysicsConfig")
    if not isinstance(randomization, Randomization):
      raise schema.OptionError("randomization", randomization, "must be a Randomization")
    self._spec = spec
    self._built = builder_lib.build(spec, physics)
    self._physics = physics
    self._substeps = physics.substeps
    self._settle = settle_substeps
    self._rand = randomization
    self._cameras = tuple(cameras)
    self._image_size = tuple(image_size)
    self._task_id = task_id
    self._instructions = tuple(instructions) if instructions is not None else (spec.language,)
    m = self._built.mj_model
    self.mj_model = m
    self.mjx_model = self._built.mjx_model()

    # Indices (static).
    self._arm_qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in panda.ARM_JOINTS])
    self._finger_qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in panda.FINGER_JOINTS])
    self._tcp = m.site("tcp").id
    self._link0 = m.body("panda_link0").id
    self._arm_dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in panda.ARM_JOINTS])
    self._mass_index = _mass_gather(m, self._arm_dof)
    self._osc = panda.OSCConfig()
    self._obj_qadr = {o.name: int(m.jnt_qposadr[m.joint(f"{o.name}_joint").id]) for o in spec.objects}
    self._obj_body = {o.name: m.body(o.name).id for o in spec.objects}
    self._contact_geoms = {n: tuple(dict.fromkeys(b.support + b.surface + b.grasp))
                           for n, b in self._built.objects.items()}
    self._contact_geoms.update({n: tuple(dict.fromkeys(b.surface + b.grasp))
                                for n, b in self._built.fixtures.items()})
    self._fixture_kinds = {f.name: f.kind for f in spec.fixtures}
    self._goal = predicates.make_goal_fn(spec, m, self._contact_geoms, self._fixture_kinds)
    self._held = predicates.make_held_fn([o.name for o in spec.objects], m, self._contact_geoms)

    # Initial data: robot at LIBERO's home posture, gripper half open (LIBERO's start: command
    # level 0), controller goal = the home end-effector pose. mj_forward fills the mass matrix the
    # first controller substep reads (resets keep the arm at home, so it stays valid).
    d = mujoco.MjData(m)
    d.qpos[self._arm_qadr] = panda.HOME_QPOS
    d.qpos[self._finger_qadr] = 0.5 * panda.FINGER_STROKE
    d.ctrl[7] = float(panda.gripper_ctrl(0.0))
    d.userdata[:2] = 0.0
    mujoco.mj_forward(m, d)
    d.mocap_pos[0] = d.site_xpos[self._tcp]
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, d.site_xmat[self._tcp])
    d.mocap_quat[0] = quat
    self.home_tcp_pos = np.array(d.site_xpos[self._tcp])
    self.home_tcp_quat = quat
    self._data0 = mjx.put_data(m, d, impl=physics.impl)

    # Rendering (lazy: only when cameras are asked for).
    self._renderer = None
    if self._cameras:
      self._renderer = self._make_renderer(shadows, render_kwargs)
    obj_geoms = []
    for o in spec.objects:
      b = self._built.objects[o.name]
      obj_geoms.append([m.geom(g).id for g in dict.fromkeys(b.support + b.surface + b.grasp + b.visual)])
    self._obj_geoms = obj_geoms
    self._light_dir0 = np.array(m.light_dir[0]) if m.nlight else np.array([0.0, 0.0, -1.0])

  def _make_renderer(self, shadows: bool, render_kwargs: Optional[dict]):
    from envs import render  # noqa: PLC0415
    return render.Renderer(self.mj_model, self._cameras, self._image_size[0], self._image_size[1],
                           shadows=shadows, **(render_kwargs or {}))

  # ----------------------------------------------------------------------------------------------
  # Contract properties.

  @property
  def instructions(self) -> Sequence[str]:
    return self._instructions

  @property
  def cameras(self) -> Sequence[str]:
    return self._cameras

  @property
  def image_size(self) -> tuple[int, int]:
    return self._image_size

  @property
  def proprio_size(self) -> int:
    return 9  # tcp position (3), tcp quaternion (4), finger positions (2)

  @property
  def action_size(self) -> int:
    return 7

  @property
  def spec(self) -> TaskSpec:
    return self._spec

  @property
  def built(self) -> builder_lib.BuiltTask:
    return self._built

  @property
  def substeps(self) -> int:
    return self._substeps

  @property
  def dt(self) -> float:
    return self._physics.timestep * self._substeps

  # ----------------------------------------------------------------------------------------------
  # Helpers the expert and tests use.

  def object_pos(self, data, name: str) -> jax.Array:
    return data.xpos[self._obj_body[name]]

  def object_quat(self, data, name: str) -> jax.Array:
    return data.xquat[self._obj_body[name]]

  def tcp_pos(self, data) -> jax.Array:
    return data.site_xpos[self._tcp]

  def tcp_mat(self, data) -> jax.Array:
    return data.site_xmat[self._tcp].reshape(3, 3)

  def gripper_opening(self, data) -> jax.Array:
    """Mean finger travel, 0 (closed) .. 0.04 (open), m."""
    return jnp.mean(data.qpos[self._finger_qadr])

  def success(self, data) -> jax.Array:
    return self._goal(data)

  @property
  def goal_targets(self) -> tuple[tuple[str, ...], ...]:
    """Per task: the objects its goal places (predicates.goal_targets); () where it only moves
    fixtures (open, close, turn on / off), for which info["grasped"] stays False."""
    return (predicates.goal_targets(self._spec),)

  def held(self, data) -> jax.Array:
    """bool[objects]: each of the scene's objects held between both fingers' pads (from contacts)."""
    return self._held(data)

  def _target_mask(self) -> np.ndarray:
    """bool[tasks, objects]: the objects each task's goal places (static)."""
    names = [o.name for o in self._spec.objects]
    return np.array([[n in t for n in names] for t in self.goal_targets], bool).reshape(
        len(self.goal_targets), len(names))

  def _grasp_info(self, state: Optional[base.State], data, unstable, prev_done) -> dict:
    """info["held"] bool[objects]: latched per episode, the object was held between both fingers'
    pads at the end of some control step; info["grasped"]: the episode's goal objects were EACH
    held at some step so far (False for a task whose goal places no object). A success with
    grasped False reached its goal without ever grasping an object it placed: pushed ("pushcut")."""
    if state is None:        # reset: nothing held yet
      return {"held": jnp.zeros((len(self._spec.objects),), bool), "grasped": jnp.asarray(False)}
    held = jnp.where(prev_done | unstable, state.info["held"], state.info["held"] | self._held(data))
    mask = jnp.asarray(self._target_mask())[self._task_index(state)]
    return {"held": held, "grasped": jnp.any(mask) & jnp.all(held | ~mask)}

  def base_pos(self, model=None) -> jax.Array:
    """The arm's base (panda_link0) position in the table frame (a suite sets it per task)."""
    model = self.mjx_model if model is None else model
    return jnp.asarray(model.body_pos)[self._link0]

  def arm_mass(self, data) -> jax.Array:
    """The arm's 7x7 joint-space inertia from the last physics step (armature included)."""
    m = data._impl.M  # noqa: SLF001  (MJX keeps no public accessor; dense or sparse layout)
    return m.reshape(-1)[self._mass_index] if m.ndim == 1 else m[self._mass_index]

  def controller_torque(self, data, model=None) -> jax.Array:
    """OSC torques toward the goal in mocap_pos/quat[0], from the current joint state."""
    return panda.osc_torque(data.qpos[self._arm_qadr], data.qvel[self._arm_dof],
                            self.arm_mass(data), data.mocap_pos[0],
                            panda.quat_to_mat(data.mocap_quat[0]), self.base_pos(model), self._osc)

  def physics_steps(self, data, n: int, model=None):
    """n physics substeps (lax.scan), the controller running in each one as robosuite's does:
    torques from the current state toward the goal, the gripper level ramping by its direction."""
    model = self.mjx_model if model is None else model
    rate = self._osc.gripper_rate * self._physics.timestep

    def body(d, _):
      level = jnp.clip(d.userdata[0] + rate * d.userdata[1], -1.0, 1.0)
      ctrl = jnp.concatenate([self.controller_torque(d, model), panda.gripper_ctrl(level)[None]])
      d = d.replace(ctrl=ctrl.astype(d.ctrl.dtype), userdata=d.userdata.at[0].set(level))
      return mjx.step(model, d), None
    d, _ = jax.lax.scan(body, data, None, length=n)
    return d

  # ----------------------------------------------------------------------------------------------
  # reset / step.

  def _sample_layout(self, rng: jax.Array) -> jax.Array:
    qpos = self._data0.qpos
    keys = jax.random.split(rng, len(self._spec.objects))
    for key, o in zip(keys, self._spec.objects):
      region = self._spec.placement(o.name)
      kxy, kyaw = jax.random.split(key)
      xy = jax.random.uniform(kxy, (2,), minval=jnp.array([region.x0, region.y0]),
                              maxval=jnp.array([region.x1, region.y1]))
      yaw = jax.random.uniform(kyaw, (), minval=region.yaw[0], maxval=region.yaw[1])
      z = self._built.objects[o.name].rest_height
      adr = self._obj_qadr[o.name]
      quat = jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
      qpos = qpos.at[adr:adr + 7].set(jnp.concatenate([xy, jnp.array([z]), quat]))
    return qpos

  def _sample_render_params(self, rng: jax.Array) -> dict:
    k_col, k_light, k_cam = jax.random.split(rng, 3)
    rgba = jnp.asarray(self.mj_model.geom_rgba, jnp.float32)
    if self._rand.color_jitter > 0:
      jit = jax.random.uniform(k_col, (len(self._obj_geoms), 3), minval=-1.0, maxval=1.0)
      for i, gs in enumerate(self._obj_geoms):
        idx = np.asarray(gs)
        rgba = rgba.at[idx, :3].set(jnp.clip(rgba[idx, :3] + self._rand.color_jitter * jit[i], 0, 1))
    light = jnp.asarray(self._light_dir0, jnp.float32)
    light = light + self._rand.light_jitter * jax.random.normal(k_light, (3,))
    light = light / jnp.linalg.norm(light)
    cam = self._rand.camera_jitter * jax.random.normal(k_cam, (max(len(self._cameras), 1), 3))
    return {"rgba": rgba, "light_dir": light, "cam_offset": cam}

  def _state_obs(self, data, task_id=None) -> dict:
    """The observation entries that are not images (cheap: updated on every physics step)."""
    task_id = self._task_id if task_id is None else task_id
    return {"task_id": jnp.asarray(task_id, jnp.int32),
            "proprio": jnp.concatenate([
                data.site_xpos[self._tcp], _mat_to_quat(data.site_xmat[self._tcp]),
                data.qpos[self._finger_qadr]]).astype(jnp.float32)}

  def scene(self, state: base.State) -> dict:
    """Renderer inputs: visible geom and camera poses (a few KB) plus the enabled render params."""
    if self._renderer is None:
      return {}
    params = state.info["render"]
    out = {"poses": self._renderer.scene_inputs(state.pipeline_state)}
    if self._rand.color_jitter > 0:
      out["rgba"] = params["rgba"]
    if self._rand.light_jitter > 0:
      out["light_dir"] = params["light_dir"]
    if self._rand.camera_jitter > 0:
      out["cam_offset"] = params["cam_offset"]
    return out

  def render_overflow(self, scene: dict) -> jax.Array:
    if self._renderer is None:
      return jnp.zeros((), jnp.int32)
    return self._renderer.overflow(scene["poses"], cam_offset=scene.get("cam_offset"))

  def render_scene(self, scene: dict) -> dict:
    if self._renderer is None:
      return {}
    kw = {k: v for k, v in scene.items() if k != "poses"}
    images = self._renderer.render_rgb(scene["poses"], **kw)
    return {base.image_key(c): images[c] for c in self._cameras}

  def reset(self, rng: jax.Array) -> base.State:
    k_layout, k_render = jax.random.split(rng)
    data = self._data0.replace(qpos=self._sample_layout(k_layout))
    # Objects are placed exactly at rest (origin = bottom, z = rest height), so kinematics is enough
    # (cheap to compile and run); settle_substeps > 0 runs physics instead.
    if self._settle:
      data = self.physics_steps(data, self._settle)
    else:
      data = mjx.camlight(self.mjx_model, mjx.kinematics(self.mjx_model, data))
    render_params = self._sample_render_params(k_render)
    success = jnp.asarray(False)   # init regions never satisfy the goal (LIBERO: False at init)
    zero = jnp.zeros((), jnp.float32)
    info = {"success": success, "unstable": jnp.asarray(False), "render": render_params,
            **self._grasp_info(None, data, None, None)}
    state = base.State(data, self._state_obs(data), zero, zero,
                       {"success": success.astype(jnp.float32)}, info)
    return self.observe(state)

  def reset_task(self, task: jax.Array, rng: jax.Array) -> base.State:
    """A training reset of the given task (what demonstrations are recorded from, as the suites'
    `reset_task`). This env holds one task, so `task` can only be 0 and this is `reset`: a fresh
    layout from the placement regions (evaluation draws from `eval_reset`'s own stream)."""
    if self.num_tasks != 1:
      raise ValueError(f"{self._spec.name}: reset_task needs a one-task env; this one was given "
                       f"{self.num_tasks} instructions (its physical task is task_id "
                       f"{self._task_id} only)")
    del task
    return self.reset(rng)

  def apply_action(self, data, action: jax.Array, model=None):
    """OSC_POSE's set_goal for a 7-D LIBERO action (no physics): the goal pose (mocap) relative to
    the current end-effector pose, and the gripper's direction (the action's sign)."""
    action = action.astype(jnp.float32)
    pos, mat = panda.tcp_pose(data.qpos[self._arm_qadr], self.base_pos(model))
    goal_pos, goal_quat = panda.osc_goal(action, pos, mat, data.mocap_quat[0], self._osc)
    return data.replace(mocap_pos=data.mocap_pos.at[0].set(goal_pos),
                        mocap_quat=data.mocap_quat.at[0].set(goal_quat),
                        userdata=data.userdata.at[1].set(jnp.sign(jnp.clip(action[6], -1.0, 1.0))))

  def step(self, state: base.State, action: jax.Array) -> base.State:
    return self.observe(self.physics_step(state, action))

  def physics_step(self, state: base.State, action: jax.Array) -> base.State:
    """One 20 Hz control step; obs images are left stale (see `observe`)."""
    prev = state.pipeline_state
    model = self._model(state)
    data = self.physics_steps(self.apply_action(prev, action, model), self._substeps, model)
    data = self._after_physics(state, data)
    prev_done = state.done > 0
    # An ended episode stays ended (envs/base.py): the state frozen, `unstable` latched; a blow-up
    # of the discarded step after a success must not turn that success into a failure.
    unstable = ((base.nonfinite((data.qpos, data.qvel)) & ~prev_done)
                | (prev_done & state.info["unstable"]))
    data = base.freeze_if_unstable(prev, data, unstable | prev_done)
    success = jnp.where(prev_done, state.info["success"], self._success(state, data) & ~unstable)
    reward = (success & ~prev_done).astype(jnp.float32)
    done = (prev_done | success | unstable).astype(jnp.float32)
    info = dict(state.info)
    info["success"] = success
    info["unstable"] = unstable
    info.update(self._grasp_info(state, data, unstable, prev_done))
    metrics = dict(state.metrics)
    metrics["success"] = success.astype(jnp.float32)
    return state.replace(pipeline_state=data,
                         obs={**state.obs, **self._state_obs(data, state.obs["task_id"])},
                         reward=reward, done=done, metrics=metrics, info=info)

  # Hooks for multi-task scenes (envs.tasks.libero_suite).

  def _success(self, state: base.State, data) -> jax.Array:
    """The goal predicate of the state's task."""
    del state
    return self._goal(data)

  def _task_index(self, state: base.State) -> jax.Array:
    """The state's task (row of goal_targets)."""
    del state
    return jnp.asarray(0, jnp.int32)

  def _model(self, state: base.State):
    """The mjx.Model this environment steps (a suite gives each environment its fixture poses)."""
    del state
    return self.mjx_model

  def _after_physics(self, state: base.State, data):
    """Runs after each control step's physics (a suite re-pins its parked objects here)."""
    del state
    return data


def _mass_gather(m: mujoco.MjModel, dofs: np.ndarray):
  """Indices of the dofs' block of MJX's mass matrix: a (7, 7) index pair for the dense layout, or
  an i32[7, 7] index into the sparse (CSR lower-triangle, `M_rownnz` / `M_colind`) one."""
  from mujoco.mjx._src import support  # noqa: PLC0415
  if not support.is_sparse(m):
    return np.ix_(dofs, dofs)
  rowadr = np.concatenate([[0], np.cumsum(m.M_rownnz)[:-1]])
  out = np.zeros((len(dofs), len(dofs)), np.int32)
  for a, i in enumerate(dofs):
    for b, j in enumerate(dofs):
      r, c = (i, j) if i >= j else (j, i)
      cols = m.M_colind[rowadr[r]:rowadr[r] + m.M_rownnz[r]]
      out[a, b] = rowadr[r] + int(np.nonzero(cols == c)[0][0])
  return out


def _mat_to_quat(xmat: jax.Array) -> jax.Array:
  return panda.mat_to_quat(xmat.reshape(3, 3))


# LIBERO's initial states vary each object within about 3 cm in x and y with a fixed yaw (measured
# over the 50 converted states of libero_spatial's and libero_goal's bowl-and-plate tasks: spans
# 2.6-3.0 cm, yaw span 0).
LIBERO_SPAN = 0.03


def libero_layout(spec: TaskSpec) -> TaskSpec:
  """`spec` with every placement region shrunk to a LIBERO_SPAN square about its centre and its yaw
  fixed at the middle of its range: the initial-state spread of LIBERO's own tasks."""
  def narrow(r):
    (cx, cy), h = r.center, 0.5 * LIBERO_SPAN
    yaw = None if r.yaw is None else (0.5 * (r.yaw[0] + r.yaw[1]),) * 2
    return dataclasses.replace(r, x0=cx - h, y0=cy - h, x1=cx + h, y1=cy + h, yaw=yaw)
  return dataclasses.replace(spec, regions=tuple(narrow(r) for r in spec.regions))


@schema.declares(OPTIONS)
def make_bowl_on_plate(image_size: int = 128, cameras: Sequence[str] = ("agentview",),
                       **kwargs) -> LiberoTask:
  """envs.registry factory: "pick up the black bowl and place it on the plate"."""
  o = split_options(OPTIONS.check(kwargs, "libero_bowl_on_plate"))
  spec = libero_layout(BOWL_ON_PLATE) if o.pop("layout") == "libero" else BOWL_ON_PLATE
  return LiberoTask(spec, cameras=OPTIONS.check_cameras(cameras, "libero_bowl_on_plate"),
                    image_size=(image_size, image_size), **o)
