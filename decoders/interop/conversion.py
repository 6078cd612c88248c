"""A checkpoint's tensors <-> our parameter tree, one `Rule` per checkpoint tensor.

An architecture (hf_gpt2.py, hf_llama.py) lists its rules; the two functions here
apply them in either direction and check everything on the way in: every tensor the
rules name is present with the shape the config gives, and no tensor is left over
(an unknown tensor means the file holds a model we would run differently). Nothing
is returned until every tensor has been checked, so a caller never gets half a model.
"""
import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np
from flax import traverse_util

from decoders.errors import WeightsError


def _whole(tensor: np.ndarray) -> tuple[np.ndarray, ...]:
  return (tensor,)


def _only(array: np.ndarray) -> np.ndarray:
  return array


@dataclasses.dataclass(frozen=True)
class Rule:
  """The checkpoint tensor `name` of `shape`, holding our parameters `paths` ("block_0/ffn/wo/kernel").

  `split(tensor)` gives one array per path; `join(*arrays)` is its inverse.
  """

  name: str
  shape: tuple[int, ...]
  paths: tuple[str, ...]
  split: Callable[[np.ndarray], tuple[np.ndarray, ...]] = _whole
  join: Callable[..., np.ndarray] = _only


def same(name: str, path: str, shape: tuple[int, ...]) -> Rule:
  """A tensor stored as we store it: embedding tables, norm scales, biases, [in, out] kernels."""
  return Rule(name, tuple(shape), (path,))


def transposed(name: str, path: str, out_features: int, in_features: int) -> Rule:
  """A PyTorch nn.Linear weight, [out, in], for our [in, out] kernel."""
  return Rule(name, (out_features, in_features), (path,), lambda w: (w.T,), lambda k: k.T)


def to_heads(name: str, path: str, width: int, heads: int, head_dim: int, linear: bool) -> Rule:
  """A Q/K/V projection as one matrix, for our [width, heads, head_dim] kernel.

  `linear`: stored [heads * head_dim, width] (nn.Linear); else [width, heads * head_dim] (GPT-2's Conv1D).
  """
  if linear:
    return Rule(
        name, (heads * head_dim, width), (path,),
        lambda w: (w.T.reshape(width, heads, head_dim),), lambda k: k.reshape(width, heads * head_dim).T,
    )
  return Rule(
      name, (width, heads * head_dim), (path,),
      lambda w: (w.reshape(width, heads, head_dim),), lambda k: k.reshape(width, heads * head_dim),
  )


def from_heads(name: str, path: str, width: int, heads: int, head_dim: int, linear: bool) -> Rule:
  """The attention output projection as one matrix, for our [heads, head_dim, width] kernel."""
  if linear:
    return Rule(
        name, (width, heads * head_dim), (path,),
        lambda w: (w.T.reshape(heads, head_dim, width),), lambda k: k.reshape(heads * head_dim, width).T,
    )
  return Rule(
      name, (heads * head_dim, width), (path,),
      lambda w: (w.reshape(heads, head_dim, width),), lambda k: k.reshape(heads * head_dim, width),
  )


def params_from_tensors(
    rules: list[Rule], tensors: Mapping[str, np.ndarray], source: str, ignored: re.Pattern | None = None
) -> dict:
  """Our nested float32 parameter dict from `tensors`; a WeightsError naming the first tensor that does not fit.

  `ignored` matches tensors that are not weights (buffers old checkpoints saved, such as
  GPT-2's causal mask). `tensors` may be lazy (each value read when first looked up).
  """
  expected = {rule.name for rule in rules}
  unexpected = sorted(n for n in tensors if n not in expected and not (ignored and ignored.search(n)))
  if unexpected:
    more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
    raise WeightsError(f"{source}: unexpected tensor {unexpected[0]}{more}: the config.json architecture has no such weight")
  flat = {}
  for rule in rules:
    if rule.name not in tensors:
      raise WeightsError(f"{source}: tensor {rule.name} is missing")
    tensor = tensors[rule.name]
    if tuple(tensor.shape) != rule.shape:
      raise WeightsError(f"{source}: tensor {rule.name} has shape {tuple(tensor.shape)}, but the config needs {rule.shape}")
    for path, array in zip(rule.paths, rule.split(np.asarray(tensor, np.float32)), strict=True):
      flat[tuple(path.split("/"))] = np.ascontiguousarray(array)
  return traverse_util.unflatten_dict(flat)


def tensors_from_params(rules: list[Rule], params: Mapping) -> dict[str, np.ndarray]:
  """The checkpoint's float32 tensors from our (unboxed, loop-layout) parameters."""
  flat = {"/".join(path): value for path, value in traverse_util.flatten_dict(dict(params)).items()}
  missing = sorted({path for rule in rules for path in rule.paths} - flat.keys())
  if missing:
    raise WeightsError(f"the parameters have no {missing[0]}: they are not those of the model given")
  return {
      rule.name: np.ascontiguousarray(rule.join(*(np.asarray(flat[path], np.float32) for path in rule.paths)))
      for rule in rules
  }
