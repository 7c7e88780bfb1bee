"""A trained policy behind a websocket: observation -> action chunk, msgpack messages with numpy arrays.

Request (a msgpack map):  {"image": uint8[H, W, 3] or [B, H, W, 3] (with two cameras in
                           env.camera, W is both views side by side: [H, 2 * H, 3]),
                           "instruction": str (or list of B) | "task_id": int (or list of B),
                           optional "proprio": float32[P] or [B, P], optional "seed": int}
Reply:                    {"actions": float32[K, D] (or [B, K, D]) in [-1, 1], "step": int}
                          or {"error": "one line naming what is wrong"}; the server keeps serving.
Arrays travel as {"__ndarray__": [dtype, shape, bytes]} (`pack` / `unpack`).

`PolicyServer.handle` is the pure request -> reply part (tests call it directly); `serve` runs it
behind websockets' threaded server (one connection per client, messages answered in order);
`PolicyClient` is the small client. Actions are decoded greedily at temperature 0 (the default, as
evaluation does) or sampled with a per-request seed.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from envs.base import views
from vla_rl_jax.models import tokenizer
from vla_rl_jax.types import PolicyObs

_ND = "__ndarray__"


def _to_msg(obj: Any) -> Any:
  if isinstance(obj, (np.ndarray, jax.Array)):
    a = np.ascontiguousarray(np.asarray(obj))
    return {_ND: [a.dtype.str, list(a.shape), a.tobytes()]}
  if isinstance(obj, np.generic):
    return obj.item()
  raise TypeError(f"cannot send a {type(obj).__name__}")


def _from_msg(obj: dict) -> Any:
  if _ND in obj and len(obj) == 1:
    dtype, shape, data = obj[_ND]
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
  return obj


def pack(obj: Any) -> bytes:
  return msgpack.packb(obj, default=_to_msg, use_bin_type=True)


def unpack(data: bytes) -> Any:
  return msgpack.unpackb(data, object_hook=_from_msg, raw=False)


class RequestError(ValueError):
  """A request the server cannot answer; the message names the field and what is allowed."""


class PolicyServer:
  """Answers requests with a built run's policy (vla_rl_jax.builders.Built) and its parameters."""

  def __init__(self, built: Any, params: Any, *, temperature: float = 0.0, step: int = 0):
    self.b, self.params, self.temperature, self.step = built, params, float(temperature), step
    self.h, self.w = built.env.image_size
    self.w *= len(views(built.cfg.env.camera))   # several views arrive side by side
    self.instructions = tuple(built.env.instructions)
    self.proprio_size = built.env.proprio_size
    self.max_text_len = built.cfg.model.max_text_len
    self.tokenizer = tokenizer.for_model(built.cfg.model)
    policy, temp = built.policy, self.temperature

    def act(params, image, text, proprio, key):
      keys = jax.random.split(key, image.shape[0])
      return policy.sample(params, PolicyObs(image=image, text=text, proprio=proprio), keys,
                           temp)[0]
    self._act = jax.jit(act)

  def describe(self) -> str:
    return (f"image uint8[{self.h}, {self.w}, 3], {len(self.instructions)} instructions, "
            f"proprio float32[{self.proprio_size}], actions float32[{self.b.policy.chunk_size}, "
            f"{self.b.policy.action_dim}]")

  def _texts(self, req: Mapping[str, Any], n: int) -> np.ndarray:
    if ("instruction" in req) == ("task_id" in req):
      raise RequestError("give exactly one of 'instruction' (text) and 'task_id' (int in "
                         f"[0, {len(self.instructions)}))")
    if "task_id" in req:
      ids = req["task_id"] if isinstance(req["task_id"], list) else [req["task_id"]] * n
      if len(ids) != n or not all(isinstance(i, int) and not isinstance(i, bool)
                                  and 0 <= i < len(self.instructions) for i in ids):
        raise RequestError(f"task_id={req['task_id']!r}: one int in [0, {len(self.instructions)}) "
                           f"or a list of {n}")
      texts = [self.instructions[i] for i in ids]
    else:
      texts = req["instruction"] if isinstance(req["instruction"], list) else [req["instruction"]] * n
      if len(texts) != n or not all(isinstance(t, str) and t.strip() for t in texts):
        raise RequestError(f"instruction={req['instruction']!r}: a non-empty string or a list "
                           f"of {n}")
    try:
      return self.tokenizer.encode_all(texts, self.max_text_len)
    except ValueError as e:
      raise RequestError(f"instruction: {e}") from None

  def handle(self, req: Any) -> dict[str, Any]:
    """One request -> one reply; never raises for a bad request (the reply carries the error)."""
    try:
      return self._handle(req)
    except RequestError as e:
      return {"error": str(e)}

  def _handle(self, req: Any) -> dict[str, Any]:
    if not isinstance(req, Mapping):
      raise RequestError(f"a request is a map with 'image' and 'instruction' or 'task_id'; got "
                         f"{type(req).__name__}")
    unknown = sorted(set(req) - {"image", "instruction", "task_id", "proprio", "seed"})
    if unknown:
      raise RequestError(f"unknown field(s) {unknown}; known: image, instruction, task_id, "
                         f"proprio, seed")
    image = req.get("image")
    if not isinstance(image, np.ndarray):
      raise RequestError("image: an array uint8[H, W, 3] (or [B, H, W, 3]) is required")
    single = image.ndim == 3
    batch = image[None] if single else image
    if batch.ndim != 4 or batch.shape[1:] != (self.h, self.w, 3) or batch.dtype != np.uint8:
      raise RequestError(f"image: {image.dtype}{list(image.shape)}, expected uint8[{self.h}, "
                         f"{self.w}, 3] or [B, {self.h}, {self.w}, 3]")
    n = batch.shape[0]
    if not 1 <= n <= 4096:
      raise RequestError(f"image: batch of {n}, allowed 1..4096")
    text = self._texts(req, n)
    proprio = req.get("proprio", np.zeros((n, self.proprio_size), np.float32))
    if not isinstance(proprio, np.ndarray):
      raise RequestError(f"proprio: an array float32[{self.proprio_size}] is required")
    proprio = proprio.reshape(1, -1) if proprio.ndim == 1 else proprio
    if proprio.shape != (n, self.proprio_size) or not np.all(np.isfinite(proprio)):
      raise RequestError(f"proprio: {list(proprio.shape)}, expected finite float32"
                         f"[{self.proprio_size}] (or [B, {self.proprio_size}])")
    seed = req.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
      raise RequestError(f"seed={seed!r}: an int in [0, 2**32)")
    actions = np.asarray(self._act(self.params, jnp.asarray(batch), jnp.asarray(text),
                                   jnp.asarray(proprio, jnp.float32), jax.random.PRNGKey(seed)))
    return {"actions": actions[0] if single else actions, "step": self.step}


def serve(server: PolicyServer, host: str, port: int, ready=None) -> None:
  """Answers websocket messages with `server.handle` until interrupted. `ready(ws_server)` is
  called once listening (the launcher prints the address; tests can shut it down)."""
  from websockets.sync.server import serve as ws_serve

  def connection(ws):
    for message in ws:
      try:
        req = unpack(message) if isinstance(message, bytes) else None
        reply = server.handle(req) if req is not None else {
            "error": "send binary msgpack messages (see vla_rl_jax/serving.py)"}
      except (ValueError, TypeError, msgpack.UnpackException) as e:  # not msgpack at all
        reply = {"error": f"undecodable request ({type(e).__name__}): send a msgpack map"}
      except Exception as e:  # noqa: BLE001  a failure answering one request ends only it
        reply = {"error": f"internal error: {type(e).__name__}: {e}"}
      ws.send(pack(reply))

  with ws_serve(connection, host, port, max_size=2**26) as ws_server:
    if ready is not None:
      ready(ws_server)
    ws_server.serve_forever()


class PolicyServerError(RuntimeError):
  """The server answered with an error."""


class PolicyClient:
  """client = PolicyClient("ws://127.0.0.1:8000"); client.act(image, instruction="...")"""

  def __init__(self, uri: str, timeout: float = 60.0):
    from websockets.sync.client import connect
    self._ws = connect(uri, open_timeout=timeout, max_size=2**26)
    self._timeout = timeout

  def request(self, req: Any) -> dict[str, Any]:
    """Sends one request (normally a map; see the module docstring) and returns the reply."""
    self._ws.send(pack(req))
    return unpack(self._ws.recv(timeout=self._timeout))

  def act(self, image: np.ndarray, *, instruction: str | None = None, task_id: int | None = None,
          proprio: np.ndarray | None = None, seed: int | None = None) -> np.ndarray:
    req: dict[str, Any] = {"image": np.asarray(image)}
    for k, v in (("instruction", instruction), ("task_id", task_id), ("proprio", proprio),
                 ("seed", seed)):
      if v is not None:
        req[k] = v
    reply = self.request(req)
    if "error" in reply:
      raise PolicyServerError(reply["error"])
    return reply["actions"]

  def close(self) -> None:
    self._ws.close()

  def __enter__(self) -> "PolicyClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
