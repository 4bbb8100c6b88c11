"""Keras 3 students: kdprune's families built with Keras 3, and a user's Keras 3 model file.

kdprune is tf_keras (Keras 2) throughout (:mod:`models.compat`), because tfmot prunes and
quantizes only tf_keras models. Keras 3 is installed beside it as ``keras`` and runs in the same
process on the TensorFlow backend; a Keras 3 student is pruned by kdprune's own backend
(``pipelines/prune/keras3.py``) and quantized after training (full-integer post-training
quantization at the export).

* :func:`build_family` builds ``mlp``, ``cnn``, ``lenet``, ``tinycnn``, ``resnet`` or a Keras
  Applications family (``mobilenet_v2``, ...) with Keras 3: the very builders of the tf_keras
  families, given Keras 3 as their ``keras`` (same layers, same names; the applications from
  Keras 3's own).
* :func:`load_student` loads a user's Keras 3 ``.keras`` file (Functional or Sequential), nested
  models inlined into one graph with the same weights (as :mod:`models.flatten` does for tf_keras)
  and a final softmax removed (kdprune distils on logits).
* :func:`is_keras3_file` tells a Keras 3 ``.keras`` archive from a tf_keras one (its
  ``metadata.json``); :func:`is_keras3` a Keras 3 object.

Example:
  >>> from models.keras3 import build_family, is_keras3
  >>> from models.spec import ModelSpec
  >>> m = build_family(ModelSpec("mlp", width=8, depth=1), (4,), 3)
  >>> is_keras3(m), m.output_shape
  (True, (None, 3))
"""

import json
import logging
import zipfile
from typing import Tuple

from models import spec as spec_lib
from models.errors import ConfigError
from models.families import BUILDERS

_LOG = logging.getLogger("kdprune")

# The built-in families whose builders take ``keras=``: kdprune's own, and the Keras Applications
# ones (built from Keras 3's ``keras.applications``: models/applications.py).
FAMILIES = ("mlp", "cnn", "lenet", "tinycnn", "resnet") + spec_lib.APPLICATION_FAMILIES


def keras3():
  """The Keras 3 module (imported on first use: 0.6 s, matplotlib included)."""
  import keras  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  if not str(getattr(keras, "__version__", "")).startswith("3"):
    raise ConfigError("Keras 3 is needed for a Keras 3 student, but `keras` is %s" % (
        getattr(keras, "__version__", "?")))
  return keras


def is_keras3(obj) -> bool:
  """Whether ``obj`` is a Keras 3 object (its class lives in the ``keras`` package)."""
  return (type(obj).__module__ or "").split(".")[0] == "keras"


def is_keras3_file(path: str) -> bool:
  """Whether ``path`` is a ``.keras`` archive that Keras 3 wrote (tf_keras' say 2.x)."""
  try:
    with zipfile.ZipFile(path) as archive:
      meta = json.loads(archive.read("metadata.json"))
  except (KeyError, ValueError, OSError, zipfile.BadZipFile):
    return False
  return str(meta.get("keras_version", "")).startswith("3")


def build_family(spec, input_shape: Tuple[int, ...], num_classes: int, name: str = None,
                 flag: str = "--student_model"):
  """The built-in family ``spec`` names, built with Keras 3; checked like any student."""
  from models import registry  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  registry._ensure_families()  # pylint: disable=protected-access
  spec_lib.validate_spec(spec, flag)
  if spec.is_user_builder or spec.name not in FAMILIES:
    raise ConfigError("%s=%s cannot be built with --student_keras=3 (Keras 3 builds %s); pass "
                      "--student_keras=2, or your own Keras 3 model with --student_path" % (
                          flag, spec.name, ", ".join(FAMILIES)))
  width, depth, dropout = spec_lib.family_defaults(spec.name)
  input_shape = tuple(int(d) for d in input_shape)
  try:
    model = BUILDERS[spec.name](
        input_shape, num_classes, width=spec.width if spec.width is not None else width,
        depth=spec.depth if spec.depth is not None else depth,
        dropout=spec.dropout if spec.dropout is not None else dropout,
        name=name or spec.name, keras=keras3())
  except ValueError as e:
    raise ConfigError("%s=%s: %s" % (flag, spec.name, e)) from None
  check(model, input_shape, num_classes, "%s=%s" % (flag, spec.name))
  return model


def check(model, input_shape, num_classes: int, what: str) -> None:
  """One line when ``model`` is not a one-input, one-output graph model that takes the data's
  inputs and gives one output per class (per target)."""
  k = keras3()
  if not isinstance(model, k.Model) or not hasattr(model, "_run_through_graph"):
    raise ConfigError("%s is a %s, not a Functional or Sequential Keras 3 model" % (
        what, type(model).__name__))
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise ConfigError("%s: the model must have one input and one output (has %d and %d)" % (
        what, len(model.inputs), len(model.outputs)))
  got = tuple(model.inputs[0].shape[1:])
  want = tuple(int(d) for d in input_shape)
  if len(got) != len(want) or any(a is not None and a != b for a, b in zip(got, want)):
    raise ConfigError("%s takes inputs of shape %s, but the data gives %s" % (what, got, want))
  if tuple(model.outputs[0].shape[1:]) != (num_classes,):
    raise ConfigError("%s gives outputs of shape %s, but the data has %d classes (targets)" % (
        what, tuple(model.outputs[0].shape[1:]), num_classes))


def _is_graph_model(layer) -> bool:
  k = keras3()
  return isinstance(layer, k.Model) and hasattr(layer, "_run_through_graph")


def _replay(model, inputs):
  """``model``'s graph applied to ``inputs``, nested graph models replayed inline (the same layer
  objects, so the same weights)."""
  def operation_fn(op):
    if _is_graph_model(op):
      return lambda *args, **kwargs: _unlist(_replay(op, args[0] if len(args) == 1 else args))
    return op
  if isinstance(model, keras3().Sequential):
    model = model._functional  # pylint: disable=protected-access
  return model._run_through_graph(inputs, operation_fn=operation_fn)  # pylint: disable=protected-access


def _unlist(outputs):
  return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def flatten(model, what: str):
  """``(model with every nested graph model inlined, whether any was)``."""
  k = keras3()
  if isinstance(model, k.Sequential) and getattr(model, "_functional", None) is None:
    raise ConfigError("%s is a Sequential model that was never built (no input shape); build it "
                      "on an input before saving" % what)
  inner = [l.name for l in model.layers if _is_graph_model(l)]
  if not inner and not isinstance(model, k.Sequential):
    return model, False
  inputs = k.Input(shape=tuple(model.inputs[0].shape[1:]), name=model.inputs[0].name)
  flat = k.Model(inputs, _unlist(_replay(model, [inputs])), name=model.name)
  if inner:
    _LOG.info("[models] %s nests %s; flattened into one graph with the same weights", what,
              ", ".join(inner))
  return flat, bool(inner)


def to_logits(model, what: str):
  """``(model without a final softmax, whether one was removed)``."""
  k = keras3()
  layer = model.outputs[0]._keras_history.operation  # pylint: disable=protected-access
  activation = getattr(layer, "activation", None)
  softmax_layer = isinstance(layer, k.layers.Softmax) or (
      isinstance(layer, k.layers.Activation) and getattr(activation, "__name__", "") == "softmax")
  if softmax_layer:
    before = layer._inbound_nodes[0].input_tensors[0]  # pylint: disable=protected-access
    out = k.Model(model.inputs[0], before, name=model.name)
  elif getattr(activation, "__name__", "") == "softmax":
    layer.activation = k.activations.linear  # Dense/Conv with activation="softmax": now linear
    out = model
  else:
    return model, False
  _LOG.info("[models] %s ends in a softmax; kdprune distils on logits, so it was removed (the "
            "argmax is unchanged)", what)
  return out, True


def load_student(path: str, input_shape, num_classes: int, flag: str = "--student_path",
                 allow_unsafe: bool = False):
  """The Keras 3 model in ``path`` as a student (flat, logits), checked against the data; a
  one-line ConfigError for a file that does not load or does not fit. Keras' ``safe_mode`` is on
  unless ``allow_unsafe``."""
  k = keras3()
  what = "%s=%s" % (flag, path)
  try:
    model = k.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError("%s does not load as a Keras 3 model (%s: %s)" % (
        what, type(e).__name__, " ".join(str(e).split())[:300])) from None
  if not _is_graph_model(model):
    raise ConfigError("%s holds a subclassed model (%s); kdprune prunes the layers of a "
                      "Functional or Sequential model" % (what, type(model).__name__))
  model, _ = flatten(model, what)
  check(model, input_shape, num_classes, what)
  model, _ = to_logits(model, what)
  return model
