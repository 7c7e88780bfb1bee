"""The environment contract: brax's Env/State plus the few facts a VLA learner needs.

Every task is a pure, jittable, vmappable `Env` with brax's signatures, so brax's wrappers
(`brax.envs.wrappers.training.wrap`) run on it unchanged:

    reset(rng: PRNGKey) -> State
    step(state: State, action: f32[D]) -> State

`State` is brax's own dataclass: (pipeline_state, obs, reward, done, metrics, info).

Observation (a flat dict, so brax's tree-mapping wrappers apply):
    obs[f"image_{camera}"]   uint8[H, W, 3]   one entry per camera in `env.cameras`; row 0 is the
                                              top of the image, column 0 its left edge.
    obs["task_id"]           int32[]          index into `env.instructions`; the learner turns it
                                              into tokens with ITS tokenizer (envs hold no tokenizer).
    obs["proprio"]           float32[P]       optional proprioception (P = env.proprio_size, 0 = absent).

Reward and termination (brax conventions: float32 scalars):
    reward      1.0 on the step where the goal predicate first holds, else 0.0 (binary outcome).
    done        1.0 once the episode is over: success, or a physics blow-up.
    info["success"]   bool[]  the task's goal predicate, evaluated on the current state.
    info["unstable"]  bool[]  the physics state became non-finite; the episode ended as a failure.

Rendering is separable from physics, so a learner that reads one frame per chunk of K actions
renders once per chunk, and can store the few-KB renderer inputs instead of images:

    physics_step(state, action) -> State    one control step; obs images are left stale
    scene(state) -> pytree                  the renderer's inputs (per environment, small)
    render_scene(scene) -> {image_<camera>: uint8[H, W, 3]}   pure function of scene(state)
    observe(state) -> State                 obs images re-rendered: observe(physics_step(s, a))
                                            equals step(s, a)
    render_overflow(scene) -> int32[]       > 0 if those images may be inexact: an error

Envs without a separate renderer keep the defaults (physics_step = step, scene = the images).

Time limits are NOT the task's business: the episode-limit wrapper (ours or brax's) adds them.
Actions are float32[D] in [-1, 1]; out-of-range values are clipped by the task.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env as _BraxEnv
from brax.envs.base import State

__all__ = ["Env", "State", "image_key", "views", "policy_image", "nonfinite", "freeze_if_unstable"]


def image_key(camera: str) -> str:
  """Observation key of a camera's RGB image."""
  return f"image_{camera}"


def views(camera: str) -> tuple[str, ...]:
  """The cameras a policy sees, from a config's env.camera: "agentview" (one view) or
  "agentview,wrist" (two, in that order; OpenVLA-OFT's LIBERO input)."""
  return tuple(c.strip() for c in camera.split(","))


def policy_image(images: Mapping[str, Any], camera: str):
  """The policy's image from {image_<camera>: u8[..., H, W, 3]}: env.camera's views side by side
  along the width, u8[..., H, V * W, 3] (a model splits it back into V square views)."""
  parts = [images[image_key(c)] for c in views(camera)]
  if len(parts) == 1:
    return parts[0]
  xp = np if all(isinstance(p, np.ndarray) for p in parts) else jnp
  return xp.concatenate(parts, axis=-2)


class Env(_BraxEnv, abc.ABC):
  """A brax Env that also says what its observations mean for a language-conditioned policy."""

  @property
  @abc.abstractmethod
  def instructions(self) -> Sequence[str]:
    """Language instruction of each task id (obs["task_id"] indexes this)."""

  @property
  @abc.abstractmethod
  def cameras(self) -> Sequence[str]:
    """Camera names; obs has one `image_{name}` entry per camera."""

  @property
  @abc.abstractmethod
  def image_size(self) -> tuple[int, int]:
    """(H, W) of every camera image."""

  @property
  def proprio_size(self) -> int:
    return 0

  @property
  def num_tasks(self) -> int:
    return len(self.instructions)

  @property
  def observation_size(self) -> Mapping[str, tuple[int, ...]]:
    h, w = self.image_size
    sizes: dict[str, tuple[int, ...]] = {image_key(c): (h, w, 3) for c in self.cameras}
    sizes["task_id"] = ()
    if self.proprio_size:
      sizes["proprio"] = (self.proprio_size,)
    return sizes

  @property
  def backend(self) -> str:
    return "mjx"

  # Rendering separable from physics (defaults for envs whose step renders anyway).

  def physics_step(self, state: State, action: jax.Array) -> State:
    """One control step without rendering: obs images may be stale until `observe`."""
    return self.step(state, action)

  def scene(self, state: State) -> Any:
    """The renderer's inputs for the current state (a small pytree of arrays, per environment);
    `render_scene(scene(state))` gives the images. Default: the images themselves."""
    return {image_key(c): state.obs[image_key(c)] for c in self.cameras}

  def render_scene(self, scene: Any) -> dict[str, jax.Array]:
    """{image_<camera>: uint8[H, W, 3]} from `scene(state)`; pure, so it can re-render later."""
    return dict(scene)

  def render_overflow(self, scene: Any) -> jax.Array:
    """int32[]: > 0 when `render_scene(scene)` may not be exact (a culled renderer ran out of
    per-tile capacity); learners treat it as an error. Default: 0 (exact by construction)."""
    del scene
    return jnp.zeros((), jnp.int32)

  def observe(self, state: State) -> State:
    """The state with its obs images rendered for the current physics state."""
    return state.replace(obs={**state.obs, **self.render_scene(self.scene(state))})

  def render(self, trajectory: Any, camera: str | None = None) -> np.ndarray:
    """uint8[T, H, W, 3]: the frames of `trajectory` (a list of States, or one State whose leaves
    carry a leading time axis) seen from `camera` (default: the env's first), for notebooks, as
    MuJoCo Playground's `env.render` offers. Each state's scene is rendered again, so states from
    `physics_step` (stale images) render correctly too."""
    if not self.cameras:
      raise ValueError("this env was built without cameras (cameras=()); build it with "
                       "cameras=('agentview',) or more to render")
    camera = camera or self.cameras[0]
    if camera not in self.cameras:
      raise ValueError(f"camera={camera!r}: this env renders {list(self.cameras)}")
    if isinstance(trajectory, (list, tuple)):
      if not trajectory:
        return np.zeros((0, *self.image_size, 3), np.uint8)
      trajectory = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trajectory)
    cache = self.__dict__.setdefault("_render_fns", {})
    if camera not in cache:  # compiled once per camera and env
      cache[camera] = jax.jit(jax.vmap(lambda s: self.render_scene(self.scene(s))[image_key(camera)]))
    return np.asarray(cache[camera](trajectory))

  def eval_reset(self, rng: jax.Array) -> State:
    """Reset from the HELD-OUT initial-state distribution used for evaluation.

    Tasks with a finite set of initial states split it so training never sees these; tasks with a
    continuous distribution may keep this default (fresh draws are held out by construction).
    """
    return self.reset(rng)


def nonfinite(tree: Any) -> jax.Array:
  """True where any floating leaf of `tree` has a non-finite entry (per environment, unbatched)."""
  leaves = [x for x in jax.tree_util.tree_leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
  if not leaves:
    return jnp.asarray(False)
  return jnp.logical_not(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))


def freeze_if_unstable(prev: Any, new: Any, unstable: jax.Array) -> Any:
  """Keep the previous (finite) state where the new one blew up, so NaNs never propagate."""
  return jax.tree_util.tree_map(lambda p, n: jnp.where(unstable, p, n), prev, new)
