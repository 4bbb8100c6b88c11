"""Nested models flattened into one Functional graph with the same weights.

tfmot prunes and quantizes the layers of a Functional or Sequential model, but a model inside a
model (``Sequential([backbone, head])``, a Functional model calling a backbone) is one opaque
layer to it: ``prune_low_magnitude`` refuses it or leaves it dense, and QAT does not support it
(tf-keras #490). :func:`flatten` replays the outer graph node by node, as tf_keras'
``Functional._run_internal_graph`` does, but steps into every nested graph model instead of
calling it, so the result calls the very same layer objects (same weights) in one graph.
"""

import logging
from typing import List, Tuple

from models.compat import keras, tf

_LOG = logging.getLogger("kdprune")


class _Always(list):
  """A tensor_dict entry that ``Node.map_arguments`` may pop any number of times."""

  def __init__(self, value):
    super().__init__([value])
    self.value = value

  def pop(self, *_):  # pylint: disable=arguments-differ
    return self.value


def _is_graph_model(layer) -> bool:
  return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def nested_models(model) -> List[str]:
  """Names of the graph models nested (at any depth) inside ``model``."""
  out = []
  for layer in model.layers:
    if _is_graph_model(layer):
      out.append(layer.name)
      out += nested_models(layer)
  return out


def _replay(model, inputs):
  """``model``'s graph applied to ``inputs`` (a list of tensors), nested models replayed inline."""
  tensors = {}
  for ref, value in zip(model.inputs, inputs):
    tensors[str(id(ref))] = _Always(value)
  for depth in sorted(model._nodes_by_depth, reverse=True):  # pylint: disable=protected-access
    for node in model._nodes_by_depth[depth]:  # pylint: disable=protected-access
      if node.is_input or any(i not in tensors for i in node.flat_input_ids):
        continue
      args, kwargs = node.map_arguments(tensors)
      if _is_graph_model(node.layer):
        outputs = _replay(node.layer, tf.nest.flatten(args[0] if len(args) == 1 else args))
        outputs = outputs[0] if len(outputs) == 1 else outputs
      else:
        outputs = node.layer(*args, **kwargs)
      for out_id, value in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
        tensors[out_id] = _Always(value)
  return [tensors[str(id(ref))].pop() for ref in model.outputs]


def flatten(model, what: str) -> Tuple[object, bool]:
  """``(model with every nested graph model inlined, whether any was)``; says so in one line."""
  inner = nested_models(model)
  if not inner:
    return model, False
  inputs = [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
            for t in model.inputs]
  outputs = _replay(model, inputs)
  flat = keras.Model(inputs if len(inputs) > 1 else inputs[0],
                     outputs if len(outputs) > 1 else outputs[0], name=model.name)
  _LOG.info("[models] %s nests %s; flattened into one Functional graph with the same weights "
            "(tfmot prunes and quantizes only the layers of a flat model)", what, ", ".join(inner))
  return flat, True
