"""Keras Applications families: ``mobilenet_v2``, ``mobilenet_v3_small``, ``mobilenet_v3_large``,
``efficientnet_b0``, ``resnet50``.

Each is built from ``tf_keras.applications`` with ``weights=None`` and ``include_top=False`` on
kdprune's own input, and finished with global average pooling, optional dropout and a Dense
``logits`` layer (no softmax: kdprune distils on logits), all in one Functional graph (no nested
model, so tfmot prunes and quantizes every layer).

* ``width`` is the width multiplier: MobileNet's ``alpha``; for ``efficientnet_b0`` EfficientNet's
  ``width_coefficient`` (B0's own is 1.0); ``resnet50`` has none and refuses any width but 1.
  ``depth`` is not used (the application fixes it).
* Channels come from the data (with ``weights=None`` any channel count is accepted: 1-channel
  MNIST builds a 1-channel stem).
* Inputs smaller than :data:`MIN_SIZE` are resized up (bilinear) by a ``Resizing`` layer inside the
  model, which says so in one line on the ``kdprune`` logger.
* BatchNormalization momentum is :data:`BN_MOMENTUM` (0.9) instead of the applications' 0.999/0.99.
* Preprocessing is kdprune's (``--normalization``): MobileNetV3 is built with
  ``include_preprocessing=False`` and EfficientNet's ``Rescaling``/``Normalization`` stem layers are
  cut out of the graph, so the model is the same however it is quantized; EfficientNet's
  squeeze-excite ``Conv2D(activation="swish")`` is split into a linear convolution and an
  ``Activation`` layer (see :func:`_rewired`), so its QAT model converts integer-only.
* With ``keras=`` Keras 3 (``--student_keras=3``, :func:`models.keras3.build_family`) each is
  built from Keras 3's ``keras.applications`` the same way (same input, head, momentum, resizing,
  preprocessing cut out, hard-sigmoid from layers); EfficientNet's swish stays inside its
  squeeze-excite convolutions there (the split is for tfmot's QAT, and a Keras 3 student is
  quantized after training, where the converter calibrates every tensor).
* MobileNetV3's hard-sigmoid (``relu6(x + 3) / 6``) is built from Keras layers
  (``Rescaling(1, offset=3)``, ``ReLU(6)``, ``Rescaling(1/6)``: an ADD, a RELU6 and a MUL in
  TFLite, each with a fake-quantized output, so the QAT model converts integer-only) instead of the
  ``TFOpLambda`` ops tf_keras uses, which tfmot's QAT cannot wrap. The layers tfmot's default
  8-bit registry does not know (``Multiply`` in squeeze-excite and hard-swish, ``Rescaling``,
  ``Resizing``) get a quantize config in ``pipelines/quantize/qat.py``.
"""

import contextlib
import logging

from models.compat import keras, output_dtype
from models.families import register
from models.spec import APPLICATION_FAMILIES

_LOG = logging.getLogger("kdprune")

# The applications' BatchNormalization momentum (0.999 in MobileNet, 0.99 elsewhere) is tuned for
# ImageNet's hundreds of thousands of steps: after the few hundred steps of a small dataset the
# moving statistics are still near their initial values and inference-mode accuracy is at chance
# (seen: MobileNetV2 on MNIST, 0.92 training accuracy, 0.10 validation). 0.9, as in
# models/resnet.py, converges in ~50 steps.
BN_MOMENTUM = 0.9

# The smallest input side the applications accept (tf_keras' ``min_size``) and build well at.
MIN_SIZE = 32


def _internals(keras, name):
  """The module of application ``name`` inside ``keras`` (tf_keras', or Keras 3's)."""
  import importlib  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  root = "keras" if keras.__name__.split(".")[0] == "keras" else "tf_keras"
  return importlib.import_module("%s.src.applications.%s" % (root, name))


@contextlib.contextmanager
def _layer_hard_sigmoid(keras=keras):
  """MobileNetV3's hard-sigmoid with Keras layers instead of TFOpLambda ops (or, in Keras 3,
  instead of operations on its tensors)."""
  mobilenet_v3 = _internals(keras, "mobilenet_v3")
  original = mobilenet_v3.hard_sigmoid

  def hard_sigmoid(x):  # relu6(x + 3) / 6, one TFLite op per layer (each output quantized)
    x = keras.layers.Rescaling(1.0, offset=3.0)(x)
    x = keras.layers.ReLU(6.0)(x)
    return keras.layers.Rescaling(1.0 / 6.0)(x)

  mobilenet_v3.hard_sigmoid = hard_sigmoid
  try:
    yield
  finally:
    mobilenet_v3.hard_sigmoid = original


def _backbone(family, x, width, keras=keras):
  apps = keras.applications
  common = dict(include_top=False, weights=None, input_tensor=x)
  if family == "mobilenet_v2":
    return apps.MobileNetV2(alpha=width, **common)
  if family in ("mobilenet_v3_small", "mobilenet_v3_large"):
    fn = apps.MobileNetV3Small if family.endswith("small") else apps.MobileNetV3Large
    with _layer_hard_sigmoid(keras):
      return fn(alpha=width, include_preprocessing=False, **common)
  if family == "efficientnet_b0":
    keras3 = keras.__name__.split(".")[0] == "keras"  # (Keras 3 calls model_name name)
    return _internals(keras, "efficientnet").EfficientNet(
        width, 1.0, 224, **{"name" if keras3 else "model_name": "efficientnet_b0"}, **common)
  return apps.ResNet50(**common)


def _rewired(model):
  """EfficientNet rebuilt for kdprune's QAT (weights are fresh: ``weights=None``):

  * without its ``Rescaling``/``Normalization`` stem layers (kdprune normalizes the data itself);
  * with the swish of its squeeze-excite ``Conv2D(activation="swish")`` layers moved into an
    ``Activation`` layer after the (linear) convolution: tfmot fake-quantizes only a swish's
    output, so TFLite, which cannot fuse a swish into a convolution, would run the convolution,
    its sigmoid and product in float; as separate layers every tensor gets a range.
  """
  config = model.get_config()
  source = {}  # dropped or split layer -> the layer its consumers read now
  layers = []
  for layer in config["layers"]:
    if layer["class_name"] in ("Rescaling", "Normalization"):
      read = layer["inbound_nodes"][0][0][0]
      source[layer["config"]["name"]] = source.get(read, read)
      continue
    layers.append(layer)
    if layer["class_name"] in ("Conv2D", "Dense") and layer["config"].get("activation") == "swish":
      name = layer["config"]["name"]
      layer["config"]["activation"] = "linear"
      act = name + "_swish"
      layers.append({"class_name": "Activation", "name": act, "inbound_nodes": [[[name, 0, 0, {}]]],
                     "config": {"name": act, "trainable": True, "dtype": layer["config"]["dtype"],
                                "activation": "swish"}})
      source[name] = act
  for layer in layers:
    for node in layer["inbound_nodes"]:
      for n in node:
        if source.get(n[0]) != layer["name"]:  # (a split swish reads its own convolution)
          n[0] = source.get(n[0], n[0])
  for out in config["output_layers"]:
    out[0] = source.get(out[0], out[0])
  config["layers"] = layers
  return keras.Model.from_config(config)


def _without_stem_preprocessing(model, keras):
  """A Keras 3 EfficientNet head-to-tail without its ``Rescaling``/``Normalization`` stem layers
  (the same layer objects, so the same weights; :func:`_rewired`'s first cut)."""
  def operation_fn(op):
    if isinstance(op, (keras.layers.Rescaling, keras.layers.Normalization)):
      return lambda x, **kwargs: x
    return op
  outputs = model._run_through_graph(model.inputs, operation_fn=operation_fn)  # pylint: disable=protected-access
  if isinstance(outputs, (list, tuple)):
    outputs = outputs[0]
  return keras.Model(model.inputs[0], outputs, name=model.name)


def build_application(family, input_shape, num_classes, *, width, dropout, name, keras=keras):
  if len(input_shape) != 3:
    raise ValueError("%s needs image inputs [H, W, C]; got %s (use mlp)" % (family, input_shape))
  width = float(width)  # models.spec.validate_spec checked it (> 0; 1 for resnet50)
  inputs = keras.Input(shape=input_shape, name="inputs")
  x = inputs
  h, w = input_shape[0], input_shape[1]
  if min(h, w) < MIN_SIZE:
    scale = MIN_SIZE / float(min(h, w))
    size = (max(MIN_SIZE, int(round(h * scale))), max(MIN_SIZE, int(round(w * scale))))
    x = keras.layers.Resizing(size[0], size[1], interpolation="bilinear", name="resize")(x)
    _LOG.info("[models] %s: inputs %dx%d are smaller than the family's minimum %d; resized up to "
              "%dx%d inside the model (Resizing layer)", family, h, w, MIN_SIZE, size[0], size[1])
  base = _backbone(family, x, width, keras)
  x = base.output
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  if dropout:
    x = keras.layers.Dropout(dropout, name="dropout")(x)
  outputs = keras.layers.Dense(num_classes, dtype=output_dtype(), name="logits")(x)
  model = keras.Model(inputs, outputs, name=name)
  if family == "efficientnet_b0":
    model = _rewired(model) if keras.__name__.split(".")[0] != "keras" else \
        _without_stem_preprocessing(model, keras)
  for layer in model.layers:  # before any call is traced: the saved config says 0.9 too
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = BN_MOMENTUM
  return model


def _register(family):
  @register(family)
  def build(input_shape, num_classes, *, width, depth, dropout, name=family, keras=keras):
    del depth  # fixed by the application
    return build_application(family, input_shape, num_classes, width=width, dropout=dropout,
                             name=name, keras=keras)
  return build


for _family in APPLICATION_FAMILIES:
  _register(_family)
