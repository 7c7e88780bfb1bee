"""Installs vla_rl_jax (the learner), envs (MJX tasks), configs and launch as one package set."""
from setuptools import find_packages, setup

setup(
    name="vla_rl_jax",
    version="0.1.0",
    description="SimpleVLA-RL (outcome-reward GRPO for VLA policies) as one compiled JAX program.",
    python_requires=">=3.12",
    packages=find_packages(include=["vla_rl_jax*", "envs*", "configs*", "launch*"]),
    package_data={"envs": ["robots/*.xml", "tasks/*.json"],
                  "vla_rl_jax": ["assets/tokenizers/*.model", "assets/pretrained/**/*"]},
    install_requires=[
        "jax>=0.11",
        "mujoco==3.17.0",
        "mujoco-mjx==3.17.0",
        "flax",
        "optax",
        "orbax-checkpoint",
        "ml-collections",
        "chex",
        "absl-py",
        "brax",
        "tensorboardX",
        "numpy",
        "pillow",
        "safetensors",
        "sentencepiece",
        "tokenizers",
    ],
)
