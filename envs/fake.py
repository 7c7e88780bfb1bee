"""A cheap pure-JAX pixel task for learner tests and the tiny demo: reach the named coloured target.

A point agent moves in the square [-1, 1]^2. Four coloured targets sit at fixed slots (right, left,
up, down of the centre at distance `slot_radius`, turned `slot_angle` degrees counter-clockwise);
the language instruction names one colour ("reach the red target"). Action (D = 2): a displacement
of `step_size * clip(a, -1, 1)`. Success (reward 1, done) when the agent is within `radius` of the
named target. The image is the top-down view: row 0 is y = +1 (top), column 0 is x = -1 (left).
With `shuffle_targets=True` the colours are assigned to slots at random per episode, so the policy
must find the colour in the image instead of learning a fixed direction per instruction. With
`distractors=False` only the named target is on the board and in the image (the others are parked
at OFF_BOARD): the image alone says where to go, the instruction does not have to be bound to a
colour. The defaults are the original task (slots at 0.3 on the axes, all four drawn).

It is a test scaffold, not a benchmark: the MJX manipulation tasks live in envs/tasks/.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import schema
from envs.base import Env, State, freeze_if_unstable, image_key, nonfinite

COLOURS = ("red", "green", "blue", "yellow")
# numpy, not jnp: importing this module (config validation reads its option schema) must not start
# a JAX backend, or a multi-process run could no longer call jax.distributed.initialize()
_RGB = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [230, 210, 40]], np.uint8)
_DIRECTIONS = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], np.float32)
OFF_BOARD = 8.0  # where targets that are not drawn are parked (distractors=False): never in view


def start_reach(slot_radius: float, slot_angle: float, start_noise: float) -> float:
  """The farthest a start position (uniform in [-start_noise, start_noise]^2) can be from its
  target: the far corner of the start square, seen from a slot (the same for all four slots)."""
  a = math.radians(slot_angle)
  return math.hypot(slot_radius * abs(math.cos(a)) + start_noise,
                    slot_radius * abs(math.sin(a)) + start_noise)


def _radius_rule(o: dict) -> None:
  # A radius that reaches every start position makes every episode a success before the policy
  # acts (radius=-1 did: only radius**2 was ever used), so nothing is learned and success rates
  # read 100%. Below this bound some start positions are outside the target disc.
  bound = start_reach(o["slot_radius"], o["slot_angle"], o["start_noise"])
  if o["radius"] >= bound:
    raise schema.OptionError("radius", o["radius"], (
        f"must be < {bound:.4g}, the farthest start position from its target (slot_radius="
        f"{o['slot_radius']}, slot_angle={o['slot_angle']}, start_noise={o['start_noise']}); "
        f"a larger radius solves every episode before the policy acts"))


OPTIONS = schema.Schema(
    options=(
        # the board is [-1, 1]^2: a longer step crosses it in one action
        schema.Float("step_size", 0.1, "move per action: step_size * clip(a, -1, 1)",
                     lo=0.0, hi=2.0, lo_open=True),
        schema.Float("radius", 0.15, "success when the agent is within this of the named target",
                     lo=0.0, lo_open=True),
        schema.Float("start_noise", 0.1, "start position uniform in [-start_noise, start_noise]^2 "
                     "(on the board)", lo=0.0, hi=1.0),
        schema.Bool("shuffle_targets", False, "colours assigned to slots at random per episode"),
        schema.Float("slot_radius", 0.3, "distance of the four slots from the centre (on the board)",
                     lo=0.0, hi=1.0, lo_open=True),
        schema.Float("slot_angle", 0.0, "slots turned this many degrees counter-clockwise",
                     lo=-360.0, hi=360.0),
        schema.Bool("distractors", True, "draw the three other targets too"),
    ),
    cameras=("agentview",),   # one top-down view
    rules=(_radius_rule,))


@struct.dataclass
class FakePipelineState:
  pos: jax.Array       # f32[2] agent position
  targets: jax.Array   # f32[4, 2] position of each colour's target


class FakeReach(Env):
  """See module docstring."""

  def __init__(self, image_size: int = 32, cameras: Sequence[str] = ("agentview",),
               step_size: float = 0.1, radius: float = 0.15, start_noise: float = 0.1,
               shuffle_targets: bool = False, slot_radius: float = 0.3, slot_angle: float = 0.0,
               distractors: bool = True):
    schema.Int("image_size", 32, "square image side", lo=1).check(image_size)
    o = OPTIONS.check(dict(step_size=step_size, radius=radius, start_noise=start_noise,
                           shuffle_targets=shuffle_targets, slot_radius=slot_radius,
                           slot_angle=slot_angle, distractors=distractors), "fake_reach")
    self._size = int(image_size)
    self._cameras = OPTIONS.check_cameras(cameras, "fake_reach")
    self.step_size, self.radius = o["step_size"], o["radius"]
    self.start_noise, self.shuffle_targets = o["start_noise"], o["shuffle_targets"]
    self.slot_radius, self.slot_angle = o["slot_radius"], o["slot_angle"]
    self.distractors = o["distractors"]

  @property
  def slots(self) -> jax.Array:
    """f32[4, 2]: the target slots: right, left, up, down of the centre at `slot_radius`, turned
    `slot_angle` degrees counter-clockwise (45: the four diagonals)."""
    a = math.radians(self.slot_angle)
    c, s = math.cos(a), math.sin(a)
    return self.slot_radius * (_DIRECTIONS @ jnp.array([[c, s], [-s, c]], jnp.float32))

  @property
  def instructions(self) -> tuple[str, ...]:
    return tuple(f"reach the {c} target" for c in COLOURS)

  @property
  def cameras(self) -> tuple[str, ...]:
    return self._cameras

  @property
  def image_size(self) -> tuple[int, int]:
    return (self._size, self._size)

  @property
  def proprio_size(self) -> int:
    return 2

  @property
  def action_size(self) -> int:
    return 2

  @property
  def backend(self) -> str:
    return "jax"

  def draw(self, ps: FakePipelineState) -> jax.Array:
    """uint8[H, W, 3] top-down image."""
    n = self._size
    centres = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n * 2.0 - 1.0
    xs, ys = jnp.meshgrid(centres, -centres)  # row 0 is y = +1
    img = jnp.full((n, n, 3), 90, jnp.uint8)
    for i in range(len(COLOURS)):
      d2 = (xs - ps.targets[i, 0]) ** 2 + (ys - ps.targets[i, 1]) ** 2
      img = jnp.where((d2 < self.radius ** 2)[..., None], _RGB[i], img)
    d2 = (xs - ps.pos[0]) ** 2 + (ys - ps.pos[1]) ** 2
    return jnp.where((d2 < (0.6 * self.radius) ** 2)[..., None], jnp.uint8(255), img)

  def scene(self, state: State) -> FakePipelineState:
    """The renderer's inputs: agent and target positions (10 floats instead of an image)."""
    return state.pipeline_state

  def render_scene(self, scene: FakePipelineState) -> dict[str, jax.Array]:
    return {image_key(c): self.draw(scene) for c in self._cameras}

  def _obs(self, ps: FakePipelineState, task_id: jax.Array,
           images: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
    obs = dict(self.render_scene(ps) if images is None else images)
    obs["task_id"] = task_id
    obs["proprio"] = ps.pos
    return obs

  def _success(self, ps: FakePipelineState, task_id: jax.Array) -> jax.Array:
    return jnp.sum((ps.pos - ps.targets[task_id]) ** 2) < self.radius ** 2

  def reset(self, rng: jax.Array) -> State:
    k_task, k_pos, k_perm = jax.random.split(rng, 3)
    task_id = jax.random.randint(k_task, (), 0, len(COLOURS), dtype=jnp.int32)
    return self._reset(task_id, k_pos, k_perm)

  def reset_task(self, task_id: jax.Array, rng: jax.Array) -> State:
    """A start of the given task (the training stream, as LIBERO's `reset_task`): what
    `launch.make_demos`-style demonstration writers reset to."""
    _, k_pos, k_perm = jax.random.split(rng, 3)
    return self._reset(jnp.asarray(task_id, jnp.int32), k_pos, k_perm)

  def _reset(self, task_id: jax.Array, k_pos: jax.Array, k_perm: jax.Array) -> State:
    pos = jax.random.uniform(k_pos, (2,), minval=-self.start_noise, maxval=self.start_noise)
    targets = self.slots
    if self.shuffle_targets:
      targets = targets[jax.random.permutation(k_perm, len(COLOURS))]
    if not self.distractors:  # only the named target is on the board (and in the image)
      targets = jnp.where((jnp.arange(len(COLOURS)) == task_id)[:, None], targets, OFF_BOARD)
    ps = FakePipelineState(pos=pos, targets=targets)
    zero = jnp.zeros((), jnp.float32)
    info = {"success": jnp.zeros((), bool), "unstable": jnp.zeros((), bool), "task_id": task_id}
    return State(pipeline_state=ps, obs=self._obs(ps, task_id), reward=zero, done=zero,
                 metrics={"success": zero}, info=info)

  def step(self, state: State, action: jax.Array) -> State:
    return self.observe(self.physics_step(state, action))

  def physics_step(self, state: State, action: jax.Array) -> State:
    ps = state.pipeline_state
    task_id = state.info["task_id"]
    # An ended episode stays ended (envs/base.py): its state frozen, done, success and unstable
    # latched (a truncated one too: the episode-limit wrapper sets done), so a finite step after a blow-up cannot clear `unstable` (an auto-reset wrapper
    # clears `done` before stepping, which restarts the latch).
    prev_done = state.done > 0
    new = ps.replace(pos=jnp.clip(ps.pos + self.step_size * jnp.clip(action, -1.0, 1.0), -1.0, 1.0))
    unstable = (nonfinite(new) & ~prev_done) | (prev_done & state.info["unstable"])
    new = freeze_if_unstable(ps, new, unstable | prev_done)
    success = jnp.where(prev_done, state.info["success"], self._success(new, task_id) & ~unstable)
    reward = (success & ~prev_done & ~state.info["success"]).astype(jnp.float32)
    done = (prev_done | success | unstable).astype(jnp.float32)
    info = {**state.info, "success": success, "unstable": unstable}
    images = {image_key(c): state.obs[image_key(c)] for c in self._cameras}  # stale until observe
    return state.replace(pipeline_state=new, obs=self._obs(new, task_id, images), reward=reward, done=done,
                         metrics={"success": success.astype(jnp.float32)}, info=info)

  def expert_action(self, state: State) -> jax.Array:
    """Scripted expert: straight to the named target (for SFT data and sanity checks)."""
    ps = state.pipeline_state
    delta = ps.targets[state.info["task_id"]] - ps.pos
    return jnp.clip(delta / self.step_size, -1.0, 1.0)


@schema.declares(OPTIONS)
def make_fake_reach(*, image_size: int, cameras: Sequence[str], **kwargs) -> FakeReach:
  return FakeReach(image_size=image_size, cameras=cameras, **OPTIONS.check(kwargs, "fake_reach"))
