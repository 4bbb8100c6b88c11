"""Training precision: Keras' mixed_float16 policy while building, float32 models when saving."""

import contextlib
import copy

from models import keras3 as keras3_models
from models.compat import keras


@contextlib.contextmanager
def precision(mixed: bool, keras3: bool = False):
  """Keras' global dtype policy while a stage builds its models: ``mixed_float16`` or ``float32``
  (tf_keras', and with ``keras3`` Keras 3's too, for a Keras 3 student; the tf_keras one also
  decides the families' float32 logits layer, :func:`models.compat.output_dtype`).

  Layers keep the policy they were built with; ``compile`` then wraps the
  optimizer of a mixed-precision model in a ``LossScaleOptimizer`` (either Keras).
  """
  modules = [keras] + ([keras3_models.keras3()] if keras3 else [])
  old = [m.mixed_precision.global_policy() for m in modules]
  for m in modules:
    m.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
  try:
    yield
  finally:
    for m, policy in zip(modules, old):
      m.mixed_precision.set_global_policy(policy)


def to_float32(model):
  """``model`` if it computes in float32, else a float32 copy with the same weights.

  Saved models are float32 whatever the training precision, so that loading,
  QAT and TFLite conversion never meet float16 layers.
  """
  if all(getattr(l, "dtype_policy", None) is None or l.dtype_policy.name == "float32"
         for l in model.layers):
    return model
  config = copy.deepcopy(model.get_config())
  for layer in config["layers"]:
    if "dtype" in layer.get("config", {}) and layer["class_name"] != "InputLayer":
      layer["config"]["dtype"] = "float32"
  with precision(False, keras3=keras3_models.is_keras3(model)):
    clone = model.__class__.from_config(config)
  clone.set_weights(model.get_weights())
  return clone
