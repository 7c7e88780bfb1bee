"""The tiny config learns, by GRPO under trainer.train_and_evaluate, a fake_reach variant that only
the image can solve; for each of two seeds, and a control shows the success comes from the pixels.

The task (FakeReach kwargs; every override lives in this file, configs/default.py is untouched):
  * the four target slots sit on the diagonals, (+-0.6, +-0.6) (slot_radius=0.85, slot_angle=45),
    the named colour's slot is drawn per episode (shuffle_targets=True) and only the named target is
    drawn (distractors=False);
  * an episode is ONE action (episode_length = chunk_size = 1, step_size=0.6): the policy sees one
    image and commits to one point; success is ending within radius=0.3 of the named target.
The instruction names a colour whose slot changes per episode and the proprio is only the agent's
start near the centre: neither says where to go. The target discs are further apart than two radii,
so one point reaches at most one slot: a policy that ignores the image succeeds with probability
<= 1/4 (BLIND_BOUND), whatever it does.

Per seed: greedy success on held-out states rises from the blind level to well above it, and the
control, those same states with every target drawn turned 90 degrees about the centre (the named
colour one slot over; success still judged at its true slot), drops the trained policy below the
blind bound: it goes where the image shows the target.

What it took (measured on the shared 2-core CPU machine; steps 0.05-0.35 s there, by load):
  * kl_coef=0.5 to the initial policy. Without it (or with kl_coef 0.1-0.25, or entropy_coef up to
    0.2 instead) GRPO collapses within ~15 steps to one blind corner (success ~0.25, entropy 0, no
    informative group left), at learning rates 3e-4 to 3e-3 and 16 to 64 prompts.
  * 32 prompts per step at lr 2e-3. With 16 prompts at lr 3e-3 seeds 0 and 1 reached only ~0.63 in
    250 steps and seed 2 nothing. The take-off step still varies: ~100 for seeds 0 and 2, ~75-150
    for 1, ~250 for seed 3 (0.23 at 200, 0.77 at 350); this file runs seeds 0 and 1 to 200 steps.
  * distractors=False. With all four colours drawn (the policy must also bind the colour word to a
    blob) the tiny model stays at the blind level for 400 RL steps, and supervised on expert actions
    for 400 steps too. The fixed-target task (instruction alone suffices) is learned in ~60 steps;
    it is not run here, to keep this file under ~3.5 minutes.
  * One action per episode: with 4 steps of 0.2 a random policy reaches a slot in ~1% of episodes,
    too rare to learn from; with more travel per episode a blind sweep can pass two slots.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from envs.fake import FakeReach
from vla_rl_jax import builders, trainer
from vla_rl_jax import config as config_lib
from vla_rl_jax.evaluation import make_eval_fn

NUM_STEPS = 200
BLIND_BOUND = 0.25
TASK = dict(step_size=0.6, radius=0.3, start_noise=0.1, shuffle_targets=True, slot_radius=0.85,
            slot_angle=45.0, distractors=False)


def image_task_config(seed: int):
  c = get_config("variant=tiny")
  c.seed = seed
  c.env.episode_length, c.policy.chunk_size = 1, 1
  c.env.kwargs.update(TASK)
  c.rl.num_prompts, c.rl.minibatch_size = 32, 64
  c.rl.kl_coef = 0.5
  c.optim.learning_rate = 2e-3
  c.train.eval_num_states = 128
  c.train.num_steps = c.train.eval_every = c.train.checkpoint_every = NUM_STEPS
  return c


class TurnedImage(FakeReach):
  """The control: every target drawn turned 90 degrees counter-clockwise about the centre (the named
  colour appears one slot over); physics and success are FakeReach's own."""

  def draw(self, ps):
    x, y = ps.targets[:, 0], ps.targets[:, 1]
    return super().draw(ps.replace(targets=jnp.stack([-y, x], axis=-1)))


def control_success(c, params) -> float:
  """Greedy success of `params` on the run's held-out states, rendered by TurnedImage."""
  cfg = config_lib.resolve(c.to_dict(), jax.device_count())
  b = builders.build(cfg)
  env = TurnedImage(image_size=cfg.env.image_size, cameras=(cfg.env.camera,), **dict(cfg.env.kwargs))
  return float(jax.device_get(make_eval_fn(dataclasses.replace(b, env=env))(params))["success_rate"])


def test_image_task_has_no_blind_shortcut():
  env = FakeReach(image_size=32, **TASK)
  c = image_task_config(0)
  assert c.env.episode_length == c.policy.chunk_size == 1  # one point per episode
  slots = np.asarray(env.slots)
  gaps = [np.linalg.norm(a - b) for i, a in enumerate(slots) for b in slots[i + 1:]]
  assert min(gaps) > 2 * env.radius  # so that point is within reach of at most one slot
  s = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 2048))
  task = np.asarray(s.info["task_id"])
  named = np.asarray(s.pipeline_state.targets)[np.arange(task.size), task]
  slot = np.argmin(np.linalg.norm(named[:, None] - slots[None], axis=-1), axis=-1)
  # the best blind guess (a slot per instruction) is right ~1/4 of the time
  best = sum(np.bincount(slot[task == t], minlength=4).max() for t in range(4)) / task.size
  assert best < BLIND_BOUND + 0.03, best
  # the task is solvable in its one step, and the control moves the named target to another slot
  n = jax.vmap(env.step)(s, jax.vmap(env.expert_action)(s))
  assert np.all(np.asarray(n.info["success"]))
  turned = TurnedImage(image_size=32, **TASK)
  img, img_t = s.obs["image_agentview"][0], turned.draw(jax.tree_util.tree_map(
      lambda x: x[0], s.pipeline_state))
  assert not np.array_equal(np.asarray(img), np.asarray(img_t))


# seed 0 in `make test`; the second seed (the same claim, another draw) in `make test-slow`
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_tiny_config_learns_to_read_the_image(tmp_path, seed):
  c = image_task_config(seed)
  s = trainer.train_and_evaluate(c, str(tmp_path), quiet=True)
  start, end = s["eval"][0], s["eval"][-1]
  assert start["step"] == 0 and end["step"] == NUM_STEPS
  train = [r["success_rate"] for r in s["train"]]
  control = control_success(c, s["final_state"].params)
  report = (f"seed {seed}: held-out greedy success {start['success_rate']:.3f} -> "
            f"{end['success_rate']:.3f}, with the turned image {control:.3f}; sampled training "
            f"success (first/last 20 steps) {np.mean(train[:20]):.3f} -> {np.mean(train[-20:]):.3f}")
  print("\n" + report)
  assert start["success_rate"] <= BLIND_BOUND + 0.1, report
  assert end["success_rate"] >= 0.6 and end["success_rate"] - start["success_rate"] >= 0.3, report
  # it went where the image shows the target: drawn one slot over, it is below the blind level
  assert control < BLIND_BOUND and end["success_rate"] - control >= 0.45, report
  # the sampled (temperature 1.6) policy improves too, not only the greedy one
  assert np.mean(train[-20:]) - np.mean(train[:20]) >= 0.1, report
