"""Softmax heads: kdprune distils on logits, so a model that ends in a softmax is converted.

tf_keras Applications (``classifier_activation="softmax"`` by default) and many user builders end
in a softmax; distillation would then run on probabilities, silently. :func:`to_logits` removes
the softmax (the argmax, and so the accuracy, is unchanged) and says so on the ``kdprune`` logger;
a softmax it cannot remove (inside a nested model: :mod:`models.flatten` inlines those first)
is refused with one line.
"""

import logging
from typing import Tuple

from models.compat import keras
from models.errors import ConfigError

_LOG = logging.getLogger("kdprune")


def _is_softmax(fn) -> bool:
  return fn is keras.activations.softmax or getattr(fn, "__name__", "") == "softmax"


def _output_layer(model):
  return model.outputs[0]._keras_history.layer  # pylint: disable=protected-access


def ends_in_softmax(model) -> bool:
  """Whether ``model``'s output is a softmax (an activation of its last layer, or a layer)."""
  layer = _output_layer(model)
  if isinstance(layer, keras.Model):
    return ends_in_softmax(layer)
  if isinstance(layer, keras.layers.Softmax):
    return True
  return _is_softmax(getattr(layer, "activation", None))


def to_logits(model, what: str) -> Tuple[object, bool]:
  """``(model without its final softmax, whether one was removed)``; ``what`` names the flag."""
  if not ends_in_softmax(model):
    return model, False
  layer = _output_layer(model)
  if isinstance(layer, keras.Model):
    raise ConfigError("%s ends in a softmax inside the nested model %s; return logits (no "
                      "softmax): kdprune distils on logits" % (what, layer.name))
  if isinstance(layer, keras.layers.Softmax) or isinstance(layer, keras.layers.Activation):
    logits = keras.Model(model.inputs, layer.input, name=model.name)
  else:  # Dense/Conv with activation="softmax": the same layer, linear
    config = model.get_config()
    layers = config["layers"]
    entry = [l for l in layers if l["config"].get("name") == layer.name][0]
    entry["config"]["activation"] = "linear"
    logits = model.__class__.from_config(config)
    logits.set_weights(model.get_weights())
  _LOG.info("[models] %s ends in a softmax; kdprune distils on logits, so it was removed (the "
            "argmax is unchanged)", what)
  return logits, True
