"""Every input is checked: env options by the env's own schema, launcher flags at start-up, one line each."""

import math
import os
import subprocess
import sys

import pytest

from envs import registry, schema
from launch import eval as eval_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SHIPPED_ENVS = ("fake_reach", "libero_bowl_on_plate", "libero_spatial", "libero_object",
                "libero_goal", "libero_10", "libero_pretrain")


def test_every_registered_env_declares_its_options():
  # the shipped ones (other tests register envs of their own in the same process)
  assert set(SHIPPED_ENVS) <= set(registry.names())
  for name in SHIPPED_ENVS:
    s = registry.kwargs_schema(name)
    assert s is not None and s.cameras, name
    assert registry.check_kwargs(name, {}) == s.defaults()   # the defaults are themselves valid
    for o in s.options:
      assert o.doc, (name, o.name)


@pytest.mark.parametrize("make, name, allowed", [
    (lambda: __import__("envs.tasks.builder", fromlist=["x"]).PhysicsConfig(timestep=-1.0),
     "timestep=-1.0", "(0.0, 0.01]"),
    (lambda: __import__("envs.tasks.builder", fromlist=["x"]).PhysicsConfig(solver="PGS"),
     "solver='PGS'", "['Newton', 'CG']"),
    (lambda: __import__("envs.tasks.builder", fromlist=["x"]).PhysicsConfig(control_hz=float("nan")),
     "control_hz=nan", "finite"),
    (lambda: registry.make("libero_goal", image_size=32, cameras=(), impl="warp"),
     "impl='warp': MJX's warp backend keeps one contact buffer", "choose one of ['jax']"),
    (lambda: __import__("envs.tasks.libero_env", fromlist=["x"]).Randomization(color_jitter=2.0),
     "color_jitter=2.0", "[0.0, 1.0]"),
    (lambda: registry.make("libero_goal", image_size=32, cameras=(), protocl="reference"),
     "protocl='reference'", "did you mean 'protocol'?"),
    (lambda: registry.make("libero_goal", image_size=32, cameras=("top",)),
     "cameras=('top',)", "['agentview', 'wrist']"),
    (lambda: registry.make("libero_bowl_on_plate", image_size=32, cameras=(), shadows="no"),
     "shadows='no'", "True or False"),
])
def test_python_construction_gets_the_same_errors(make, name, allowed):
  with pytest.raises(schema.OptionError) as e:
    make()
  assert str(e.value).startswith(name) and allowed in str(e.value), str(e.value)


def test_schema_specs():
  s = schema.Schema((schema.Int("n", 1, "n", lo=0, hi=3), schema.IntTuple("ids", (), "ids", hi=4)),
                    cameras=("a",))
  assert s.check({"ids": [2, 0]}) == {"n": 1, "ids": (2, 0)}
  for kw, msg in (({"n": True}, "n=True: must be an integer"), ({"n": 4}, "n=4: must be in [0, 3]"),
                  ({"ids": (1, 1)}, "each at most once"), ({"ids": "12"}, "tuple of integers"),
                  ({"nn": 1}, "nn=1: unknown option of env ''; did you mean 'n'?")):
    with pytest.raises(schema.OptionError, match=msg.replace("[", r"\[").replace("?", r"\?")):
      s.check(kw)
  with pytest.raises(ValueError):   # a declared default outside its own range is a bug
    schema.Schema((schema.Float("x", -1.0, "x", lo=0.0),), cameras=())


def _args(**kw):
  a = {f: None for f in eval_lib.FLAGS_CHECKED}
  a.update(policy="checkpoint", num_videos=4, video_size=128)
  a.update(kw)
  return a


@pytest.fixture
def run_dir(tmp_path):
  for step in (10, 20):
    os.makedirs(tmp_path / "checkpoints" / str(step))
  os.makedirs(tmp_path / "checkpoints" / "30.orbax-checkpoint-tmp-1")   # incomplete: not a step
  return str(tmp_path)


@pytest.mark.parametrize("kw, line", [
    (dict(num_states=0), "--num_states=0: must be > 0"),
    (dict(num_states=-8), "--num_states=-8: must be > 0"),
    (dict(temperature=-0.5), "--temperature=-0.5: must be a finite number >= 0"),
    (dict(temperature=math.inf), "--temperature=inf: must be a finite number >= 0"),
    (dict(num_videos=-1), "--num_videos=-1: must be >= 0"),
    (dict(video_size=0), "--video_size=0: must be in [1, 1024]"),
    (dict(video_size=4096), "--video_size=4096: must be in [1, 1024]"),
    (dict(episode_length=0), "--episode_length=0: must be > 0"),
    (dict(step=-1), "--step=-1: must be >= 0"),
    (dict(step=15), "--step=15: no complete checkpoint of that step under {d}/checkpoints; "
                    "saved steps: [10, 20]"),
    (dict(env="libero_goal"), "--env=libero_goal: applies to --policy=expert only"),
    (dict(workdir=None), "give --workdir=DIR"),
    (dict(policy="expert", env="libero_goal", task_ids=["0", "10"]),
     "--task_ids=0,10: each must be in [0, 9] (not [10])"),
    (dict(policy="expert", env="libero_goal", task_ids=["x"]), "--task_ids=x: give integers"),
    (dict(policy="expert", env="fake_reach", task_ids=["1"]),
     "--task_ids=1: env 'fake_reach' has no task ids"),
    (dict(policy="expert", env="libero_goal", num_states=8), "--num_states=8: applies to "
                                                             "--policy=checkpoint only"),
    (dict(policy="expert", env="libero_goal", states_per_task=0), "--states_per_task=0: must be "
                                                                  "> 0"),
    (dict(states_per_task=5), "--states_per_task=5: applies to --policy=expert only"),
    (dict(policy="expert", env="nope"), "--env=nope: unknown env"),
    (dict(policy="expert"), "--policy=expert needs --env=NAME"),
])
def test_eval_arguments_are_checked_at_start_up(run_dir, capsys, kw, line):
  if kw.get("policy") != "expert":
    kw = {"workdir": run_dir, **kw}
  with pytest.raises(SystemExit) as e:
    eval_lib.check_args(_args(**kw))
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("launch.eval: "), err
  assert line.format(d=run_dir) in err[0], err[0]


def test_good_eval_arguments_pass(run_dir):
  eval_lib.check_args(_args(workdir=run_dir, step=20, num_states=8, temperature=0.0))
  eval_lib.check_args(_args(policy="expert", env="libero_goal", task_ids=["3", "0"]))
  eval_lib.check_args(_args(policy="expert", env="libero_goal", states_per_task=5))


@pytest.mark.parametrize("module, args, line", [
    ("launch.eval", ["--temperature=nan", "--workdir=."], "launch.eval: --temperature=nan: must be a "
     "finite number >= 0 (0 = greedy)"),
    ("launch.eval", ["--workdir=/nonexistent/run"], "launch.eval: --workdir=/nonexistent/run: no "
     "such directory"),
    ("launch.make_demos", ["--suite=libero_goal", "--out=/tmp/x", "--seed=5000"],
     "launch.make_demos: --seed=5000: must be in [0, 2146]"),
    ("launch.benchmark", ["--config=configs/benchmark.py:what=env", "--config.nm_envs=3"],
     "launch.benchmark: --config.nm_envs=3: config has no field 'nm_envs'; did you mean 'num_envs'?"),
    ("launch.benchmark", ["--config=configs/benchmark.py:what=train",
                          "--config.train_envs=('fake_rech',)"],
     "launch.benchmark: --config.train_envs: 'fake_rech' is not a registered env"),
    ("launch.benchmark", ["--config=configs/benchmark.py:what=env", "--config.num_envs=(0,)"],
     "launch.benchmark: --config.num_envs=(0,): give batch sizes >= 1"),
    ("launch.benchmark", ["--config=configs/benchmark.py:what=train",
                          "--config.train_meshes=('8,1',)"],
     "launch.benchmark: --config.train_meshes=('8,1',): give 'data,fsdp,tensor' strings"),
    ("launch.benchmark", ["--config=configs/benchmark.py:what=suites", "--config.suite_own_task=10"],
     "launch.benchmark: --config.suite_own_task=10: give a task id 0-9"),
    ("launch.demo", ["--task=libero", "--workdir=/tmp/demo_bad", "--pretrained=/nonexistent/pre"],
     "launch.demo: --pretrained=/nonexistent/pre: no config.json there (not a launch.pretrain "
     "workdir); build one with: python -m launch.pretrain"),
    ("launch.demo", ["--task=libero", "--workdir=/tmp/demo_bad", "--env=fake_reach"],
     "launch.demo: --env=fake_reach: not a LIBERO-MJX env"),
    ("launch.demo", ["--workdir=/tmp/demo_bad", "--rl_steps=0"],
     "launch.demo: --rl_steps=0: must be in [1, 100000]"),
])
def test_launchers_exit_with_one_line_and_no_traceback(module, args, line):
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 2
  err = out.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(line), out.stderr


def test_resolving_a_config_starts_no_jax_backend():
  # a multi-process run resolves its config before jax.distributed.initialize(), which must come
  # before any backend exists; reading an env's option schema imports its module
  code = ("from configs.default import get_config\n"
          "from vla_rl_jax import config\n"
          f"for name in {SHIPPED_ENVS!r}:\n"
          "  config.resolve(get_config('variant=tiny,env=' + name))\n"
          "from configs import libero_grpo\n"   # the GRPO preset on top of the suites
          "for s in ('libero_spatial', 'libero_10'):\n"
          "  config.resolve(libero_grpo.get_config('variant=small,suite=' + s))\n"
          "from jax._src import xla_bridge\n"
          "assert not xla_bridge._backends, 'a JAX backend was started'\n")
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("module", ["launch.train", "launch.eval", "launch.benchmark",
                                    "launch.aot_compile",
                                    "launch.make_demos", "launch.plot", "launch.serve",
                                    "launch.demo", "launch.pretrain"])
def test_importing_a_launcher_and_the_envs_prints_nothing(module):
  # mujoco.mjx's "Failed to import warp" lines broke `launch.benchmark | jq` and every JSON report
  code = f"import {module}, envs.tasks.libero_suite, envs.fake, mujoco.mjx"
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert p.returncode == 0 and p.stdout == "" and "warp" not in p.stderr, (p.stdout, p.stderr)


def test_a_program_larger_than_the_device_is_refused_before_it_runs():
  """`trainer.check_fits` reads XLA's memory analysis of the compiled step against the device's
  memory limit: the small variant once needed 275 GB on a 141 GB H200 and failed inside its first
  step (RESOURCE_EXHAUSTED); now start-up names the knobs. CPU devices report no limit (pass)."""
  import jax
  import jax.numpy as jnp

  from vla_rl_jax.config import ConfigError
  from vla_rl_jax.trainer import check_fits

  compiled = jax.jit(lambda x: jnp.tanh(x @ x) @ x).lower(jnp.ones((512, 512))).compile()
  m = compiled.memory_analysis()
  need = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + \
      m.temp_size_in_bytes
  assert need >= 2 * 512 * 512 * 4          # the argument and the output at least

  class Device:                              # a device with `limit` bytes (None: no statistics)
    def __init__(self, limit):
      self.limit = limit

    def memory_stats(self):
      return None if self.limit is None else {"bytes_limit": self.limit}

    def __str__(self):
      return "gpu:0"

  with pytest.raises(ConfigError, match=r"train step needs [\d.]+ MiB on gpu:0 .*more than its "
                                        r"[\d.]+ MiB.*rl\.remat_calls=True.*rl\.grad_accum=per_call"
                                        r".*rl\.minibatch_size"):
    check_fits(compiled, "train step", Device(need - 1))
  check_fits(compiled, "train step", Device(need))       # exactly fits
  check_fits(compiled, "train step", Device(None))       # no limit known
  check_fits(compiled, "train step")                     # this machine's device (CPU: no limit)
