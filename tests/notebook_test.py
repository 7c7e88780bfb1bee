"""launch/notebooks/ablate_losses.ipynb executes headless (a kernel from this Python, 3 steps per run)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "launch", "notebooks", "ablate_losses.ipynb")


def test_ablate_losses_notebook_executes(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  from jupyter_client.kernelspec import NATIVE_KERNEL_NAME  # noqa: PLC0415
  monkeypatch.setenv("ABLATE_STEPS", "3")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  monkeypatch.setenv("TMPDIR", str(tmp_path))   # the notebook's run directories
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as a user's kernel has
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name=NATIVE_KERNEL_NAME,
                                   resources={"metadata": {"path": str(tmp_path)}})
  # the kernel is this interpreter (the venv's), whatever `python3` kernelspec Jupyter finds
  client.km = client.create_kernel_manager()
  client.km.kernel_spec.argv[0] = sys.executable
  client.execute()
  out = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                  if o.get("output_type") == "stream")
  assert "ppo_clip (stock): 3 train rows" in out, out[-2000:]
  assert "ppo_clip_kl_old, beta=0.1: 3 train rows" in out, out[-2000:]
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) == 1   # the figure of success and loss curves
