"""Channel pruning: whole Conv2D filters and Dense units removed, the Functional model rebuilt smaller.

Magnitude pruning leaves zeros that TFLite still multiplies; removing whole
units makes every following tensor smaller too. Three parts:

* :func:`analyze` (no TensorFlow): which layers own units that can be removed
  and which layers follow them. An owner is a Conv2D (``groups=1``,
  channels-last) or Dense layer whose output reaches, through layers that pass
  channels through unchanged (BatchNormalization on the last axis,
  activations, pooling, Dropout, Flatten, global pooling), exactly one
  consumer: another Conv2D or Dense, whose input channels are then removed to
  match. Everything else is kept whole with a reason: the output layer, a
  layer feeding Add/Concatenate (a residual sum needs equal widths), a
  DepthwiseConv2D, a shared layer, anything unknown.
* :func:`importance` and :func:`shrink` (TensorFlow): the score of each unit
  and the rebuild: ``model.get_config()`` with the new ``filters``/``units``,
  ``from_config``, then every layer's weights copied with the removed units
  (and, in consumers, the matching input channels) sliced out. After Flatten
  a Dense kernel's rows are indexed ``(h * W + w) * C + c``, so the rows of
  every position are kept for each surviving channel.
* :func:`pipelines.prune.plan.channel_schedule` (no TensorFlow): the fraction of units removed
  after each epoch, growing polynomially (the shape of the magnitude-pruning schedule)
  from 0 at ``--pruning_begin`` to ``--channel_fraction`` at ``--pruning_end``.

Importance is the BatchNorm scale ``|gamma|`` of the unit when a
BatchNormalization follows the owner (network slimming, Liu et al. 2017: the
scale is what the network itself uses to weigh the channel, and it is
comparable across channels whatever the size of the kernels), else the L2 norm
of the unit's incoming weights (kernel slice and bias).
"""

from typing import Dict, List, Optional, Sequence

import numpy as np

from models.compat import keras
from pipelines.config.errors import ConfigError
from pipelines.prune.plan import units_to_keep

OWNERS = ("Conv2D", "Dense")
PASS_THROUGH = ("BatchNormalization", "ReLU", "Activation", "LeakyReLU", "ELU", "Softmax",
                "MaxPooling2D", "AveragePooling2D", "Dropout", "SpatialDropout2D",
                "GaussianNoise", "GaussianDropout", "Flatten", "GlobalAveragePooling2D",
                "GlobalMaxPooling2D")


def _inbound(layer: dict) -> List[str]:
  """The names of the layers feeding ``layer`` (a ``get_config()`` layer entry)."""
  names = []
  for node in layer.get("inbound_nodes") or []:
    for item in node:
      names.append(item[0])
  return names


def analyze(model_config: dict, ranks: Optional[Dict[str, int]] = None):
  """Finds the layers whose units can be removed.

  Args:
    model_config: a Functional model's ``get_config()``.
    ranks: the rank of each layer's output (batch included), used to check that
      a BatchNormalization normalises the channel axis; None skips the check.

  Returns:
    ``(chains, kept)``: ``chains`` maps each shrinkable owner to
    ``{"through": [pass-through layer names], "consumer": name, "flatten": name or None,
    "bn": name of the first BatchNormalization or None}``; ``kept`` maps every
    other Conv2D/Dense (and DepthwiseConv2D) to the reason it is kept whole.
  """
  layers = {l["name"]: l for l in model_config["layers"]}
  users: Dict[str, List[str]] = {name: [] for name in layers}
  for layer in model_config["layers"]:
    for source in _inbound(layer):
      users.setdefault(source, []).append(layer["name"])
  outputs = {item[0] for item in model_config.get("output_layers", [])}
  chains, kept = {}, {}
  for name, layer in layers.items():
    kind = layer["class_name"]
    if kind == "DepthwiseConv2D":
      kept[name] = "kept whole: DepthwiseConv2D channels follow its input (not shrunk)"
      continue
    if kind not in OWNERS:
      continue
    reason = _owner_problem(layer, ranks)
    chain = None if reason else _follow(name, layers, users, outputs, ranks)
    if isinstance(chain, str):
      reason = chain
    if reason:
      kept[name] = "kept whole: " + reason
    else:
      chains[name] = chain
  return chains, kept


def _owner_problem(layer: dict, ranks) -> Optional[str]:
  cfg = layer["config"]
  if len(layer.get("inbound_nodes") or []) > 1:
    return "shared layer (called more than once)"
  if layer["class_name"] == "Conv2D":
    if cfg.get("groups", 1) != 1:
      return "grouped convolution"
    if cfg.get("data_format", "channels_last") != "channels_last":
      return "channels_first convolution"
  elif ranks is not None and ranks.get(layer["name"]) != 2:
    return "Dense on a rank-%s input" % (ranks.get(layer["name"], 0) - 1)
  return None


def _bn_on_last_axis(layer: dict, ranks) -> bool:
  axis = layer["config"].get("axis", -1)
  axis = list(axis) if isinstance(axis, (list, tuple)) else [axis]
  if axis == [-1]:
    return True
  return ranks is not None and axis == [ranks.get(layer["name"], 0) - 1]


def _follow(owner: str, layers, users, outputs, ranks):
  """The chain from ``owner`` to its single consumer, or a string saying why there is none."""
  through, flatten, bn = [], None, None
  current = owner
  while True:
    if current in outputs:
      return "%s is a model output" % ("it" if current == owner else current)
    nxt = users.get(current, [])
    if len(nxt) != 1:
      return "%s feeds %d layers (%s)" % (current, len(nxt), ", ".join(nxt) or "none")
    layer = layers[nxt[0]]
    kind, name = layer["class_name"], layer["name"]
    if len(layer.get("inbound_nodes") or []) > 1:
      return "%s is shared (called more than once)" % name
    if kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"):
      return "feeds %s %s (a residual/merge needs its widths unchanged)" % (kind, name)
    if kind in OWNERS:
      if _owner_problem(layer, ranks) and kind == "Conv2D":
        return "feeds %s, which cannot lose input channels (%s)" % (
            name, _owner_problem(layer, ranks))
      return {"through": through, "consumer": name, "flatten": flatten, "bn": bn}
    if kind not in PASS_THROUGH:
      return "feeds %s %s, which is not known to pass channels through" % (kind, name)
    if kind == "BatchNormalization":
      if not _bn_on_last_axis(layer, ranks):
        return "feeds %s, which does not normalise the channel axis" % name
      bn = bn or name
    if kind == "Flatten":
      if flatten:
        return "two Flatten layers after it"
      flatten = name
    if kind in ("Softmax",) or (kind == "Activation" and
                                layer["config"].get("activation") == "softmax"):
      return "feeds a softmax over channels (%s)" % name
    through.append(name)
    current = name


# ----------------------------------------------------------------------------
# TensorFlow parts.


def _ranks(model) -> Dict[str, int]:
  return {l.name: len(l.output_shape) for l in model.layers
          if not isinstance(l.output_shape, list)}


def analyze_model(model):
  """:func:`analyze` of a built Functional ``model``; refuses a model that is not Functional."""
  if isinstance(model, keras.Sequential) or not getattr(model, "_is_graph_network", False):
    raise ConfigError("--pruning_structure=channels needs a Functional student (got %s)" %
                      type(model).__name__)
  return analyze(model.get_config(), _ranks(model))


def units(model, names: Sequence[str]) -> Dict[str, int]:
  """The number of units (filters or units) of each layer in ``names``."""
  return {n: int(model.get_layer(n).get_weights()[0].shape[-1]) for n in names}


def importance(model, chains: dict) -> Dict[str, "np.ndarray"]:
  """The score of every unit of each owner in ``chains``: BN ``|gamma|`` when the chain has a
  BatchNormalization with a scale, else the L2 norm of the unit's kernel slice and bias."""
  scores = {}
  for owner, chain in chains.items():
    bn = model.get_layer(chain["bn"]) if chain["bn"] else None
    if bn is not None and getattr(bn, "scale", False):
      scores[owner] = np.abs(bn.gamma.numpy())
      continue
    weights = model.get_layer(owner).get_weights()
    kernel = weights[0].reshape(-1, weights[0].shape[-1])
    sq = np.sum(kernel ** 2, axis=0)
    if len(weights) > 1:
      sq = sq + weights[1] ** 2
    scores[owner] = np.sqrt(sq)
  return scores


def most_important(scores, count: int):
  """The sorted indices of the ``count`` most important units, the ones kept (ties keep the lower
  index)."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  return np.sort(order[:count])


def shrink(model, keep: Dict[str, "np.ndarray"], chains: Optional[dict] = None):
  """A new Functional model with only the units ``keep`` names (owner -> kept unit indices).

  Owners must be shrinkable (see :func:`analyze`). Weights of the surviving
  units are copied; the pass-through BatchNormalization layers and the
  consumer's input channels are sliced to match. The new model has the same
  layer names, so it is built and saved like any student.
  """
  if chains is None:
    chains, kept = analyze_model(model)
  else:
    kept = {}
  bad = [n for n in keep if n not in chains]
  if bad:
    raise ConfigError("cannot remove units of %s: %s" % (", ".join(bad), "; ".join(
        "%s %s" % (n, kept.get(n, "is not a shrinkable Conv2D/Dense")) for n in bad)))
  out_idx, chan_idx, in_idx = {}, {}, {}
  for owner, idx in keep.items():
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    if idx.size == 0 or len(set(idx.tolist())) != idx.size:
      raise ValueError("%s: the kept units must be distinct and at least one" % owner)
    chain = chains[owner]
    out_idx[owner] = idx
    for name in chain["through"]:
      chan_idx[name] = idx
    rows = idx
    if chain["flatten"]:
      shape = model.get_layer(chain["flatten"]).input_shape
      positions = int(np.prod(shape[1:-1]))
      rows = (np.arange(positions)[:, None] * int(shape[-1]) + idx[None, :]).reshape(-1)
    in_idx[chain["consumer"]] = rows

  config = model.get_config()
  for layer in config["layers"]:
    if layer["name"] in out_idx:
      key = "filters" if layer["class_name"] == "Conv2D" else "units"
      layer["config"][key] = int(out_idx[layer["name"]].size)
  new = keras.Model.from_config(config)

  for layer in model.layers:
    weights = layer.get_weights()
    name = layer.name
    if not weights:
      continue
    if name in out_idx or name in in_idx:
      kernel = weights[0]
      if name in in_idx:
        kernel = np.take(kernel, in_idx[name], axis=kernel.ndim - 2)
      if name in out_idx:
        kernel = np.take(kernel, out_idx[name], axis=kernel.ndim - 1)
        weights = [kernel] + [np.take(w, out_idx[name], axis=-1) for w in weights[1:]]
      else:
        weights = [kernel] + weights[1:]
    elif name in chan_idx:
      weights = [np.take(w, chan_idx[name], axis=-1) for w in weights]
    new.get_layer(name).set_weights(weights)
  return new


def step(model, original: Dict[str, int], fraction: float, chains: dict):
  """Removes the least important units so that each owner keeps
  :func:`units_to_keep` ``(original, fraction)``; returns ``(model, removed per layer)``.
  Owners already at or below that size are left alone."""
  scores = importance(model, chains)
  keep, removed = {}, {}
  for owner, score in scores.items():
    target = units_to_keep(original[owner], fraction)
    if target < score.size:
      keep[owner] = most_important(score, target)
      removed[owner] = int(score.size - target)
  if not keep:
    return model, removed
  return shrink(model, keep, chains), removed


def zeroed_copy(model, drop: Dict[str, Sequence[int]], chains: dict):
  """A copy of ``model`` (same shapes) whose units ``drop`` (owner -> indices) output exactly
  zero into their consumer: the consumer's input weights from those channels are zeroed. Its
  outputs equal those of :func:`shrink` without the dropped units (used by the tests)."""
  copy = keras.Model.from_config(model.get_config())
  copy.set_weights(model.get_weights())
  for owner, idx in drop.items():
    chain = chains[owner]
    consumer = copy.get_layer(chain["consumer"])
    weights = consumer.get_weights()
    kernel = weights[0]
    channels = model.get_layer(owner).get_weights()[0].shape[-1]
    mask = np.ones(channels, dtype=bool)
    mask[list(idx)] = False
    if chain["flatten"]:
      mask = np.tile(mask, kernel.shape[-2] // channels)
    shape = [1] * kernel.ndim
    shape[-2] = mask.size
    weights[0] = kernel * mask.reshape(shape)
    consumer.set_weights(weights)
  return copy


def describe(before: Dict[str, int], after: Dict[str, int]) -> Dict[str, dict]:
  """``{layer: {"units_before", "units_after", "removed_fraction"}}`` for metrics.json."""
  return {n: {"units_before": before[n], "units_after": after[n],
              "removed_fraction": round(1 - after[n] / float(before[n]), 6)} for n in before}
