"""A teacher trained outside kdprune: a tf_keras ``.keras``/``.h5``, a Keras 3 ``.keras``, or a
TF SavedModel directory from any producer (its ``serving_default`` signature).

The teacher is only run, never pruned or saved, so it need not be tf_keras: whatever the file
holds is wrapped in a one-layer tf_keras Functional model (:func:`load`) that the distillation
trainer, the teacher-output cache and the export's reference conversion use like a trained
teacher. Outputs that are probabilities (non-negative rows summing to 1, e.g. a tf_keras
Applications model with its default softmax head) are turned into logits by their logarithm
(``outputs_are="auto"`` detects them; ``logits`` / ``probabilities`` force it).

Every check runs before any training: the path exists and loads, its input shape fits the data
(or the message says which ``--image_size`` or channels it needs), its output has one unit per
class (per target for regression).
"""

import os
from typing import Optional, Tuple

import numpy as np

from models import files
from models import keras3 as keras3_models
from models.compat import keras, tf
from pipelines.config.errors import ConfigError

OUTPUTS_ARE = ("auto", "logits", "probabilities")
_EPS = 1e-7


def kind_of(path: str) -> str:
  """``savedmodel``, ``keras`` (a ``.keras`` zip, tf_keras or Keras 3) or ``h5``; ConfigError
  naming the flag for anything else."""
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
      raise ConfigError("--teacher_path=%s is a directory without saved_model.pb; pass a SavedModel "
                        "directory, a .keras or an .h5 file" % path)
    return "savedmodel"
  if path.endswith(".keras"):
    return "keras"
  if path.endswith((".h5", ".hdf5")):
    return "h5"
  raise ConfigError("--teacher_path=%s: expected a .keras or .h5 file or a SavedModel directory"
                    % path)


def _first_line(e: Exception) -> str:
  text = " ".join(str(e).split())
  return (text[:300] or type(e).__name__)


def open_model(path: str, allow_unsafe: bool = False):
  """``(call, input_shape, output_units, flavour)`` for the model at ``path``.

  ``call(x)`` runs it in inference mode on a float32 batch; ``input_shape`` excludes the batch.
  A file whose loading would run Python stored in it is refused unless ``allow_unsafe``
  (:mod:`models.files`).
  """
  kind = kind_of(path)
  files.check_safe(path, "--teacher_path", allow_unsafe)
  try:
    if kind == "savedmodel":
      loaded = tf.saved_model.load(path)
      sig = loaded.signatures.get("serving_default")
      if sig is None:
        raise ConfigError("--teacher_path=%s: the SavedModel has no serving_default signature "
                          "(signatures: %s)" % (path, ", ".join(loaded.signatures) or "none"))
      args, kwargs = sig.structured_input_signature
      specs = list(kwargs.values()) + list(args)
      if len(specs) != 1:
        raise ConfigError("--teacher_path=%s: serving_default takes %d inputs; a teacher takes "
                          "one" % (path, len(specs)))
      name = next(iter(kwargs)) if kwargs else None
      outputs = sig.structured_outputs
      if len(outputs) != 1:
        raise ConfigError("--teacher_path=%s: serving_default returns %d outputs (%s); a teacher "
                          "returns one" % (path, len(outputs), ", ".join(outputs)))
      out_key = next(iter(outputs))
      shape = tuple(specs[0].shape[1:])
      units = outputs[out_key].shape[-1]
      dtype = specs[0].dtype

      def call(x, sig=sig, name=name, out_key=out_key, dtype=dtype, loaded=loaded):
        del loaded  # kept alive with the function
        x = tf.cast(x, dtype)
        result = sig(**{name: x}) if name else sig(x)
        return result[out_key]
      return call, shape, units, "a SavedModel (serving_default)"
    if kind == "keras" and keras3_models.is_keras3_file(path):
      import keras as keras3  # pylint: disable=g-import-not-at-top
      model = keras3.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
      return (lambda x, m=model: m(x, training=False)), tuple(model.input_shape[1:]), \
          model.output_shape[-1], "a Keras 3 model"
    model = keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
    return (lambda x, m=model: m(x, training=False)), tuple(model.input_shape[1:]), \
        model.output_shape[-1], "a tf_keras model"
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError("--teacher_path=%s does not load as a teacher (%s: %s)" % (
        path, type(e).__name__, _first_line(e))) from None


def check_fits(path: str, shape: Tuple, units, input_shape: Tuple[int, ...], outputs: int,
               regression: bool) -> None:
  """One-line ConfigError when the model cannot take the data's inputs or predict its classes."""
  shape = tuple(None if d is None else int(d) for d in shape)
  want = tuple(int(d) for d in input_shape)
  fits = len(shape) == len(want) and all(a is None or a == b for a, b in zip(shape, want))
  if not fits:
    hint = ""
    if len(shape) == 3 and len(want) == 3:
      if shape[:2] != want[:2] and None not in shape[:2]:
        hint += "; pass --image_size=%d,%d" % shape[:2]
      if shape[2] != want[2]:
        hint += "; it takes %s channels, the data has %d" % (shape[2], want[2])
    raise ConfigError("--teacher_path=%s takes inputs of shape %s, but the data gives %s%s" % (
        path, shape, want, hint))
  if units is not None and int(units) != outputs:
    raise ConfigError("--teacher_path=%s has %s outputs, but the data has %d %s" % (
        path, units, outputs, "targets" if regression else "classes"))


class _Imported(keras.layers.Layer):
  """Runs an imported teacher (any of the formats above) inside a tf_keras graph."""

  def __init__(self, call, log_of_probabilities: bool, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self._call = call
    self.log_of_probabilities = log_of_probabilities

  def call(self, x):  # pylint: disable=arguments-differ
    y = tf.cast(self._call(x), tf.float32)
    if self.log_of_probabilities:
      y = tf.math.log(tf.maximum(y, _EPS))
    return y


# How far from 1 a row of probabilities may sum in the dtype it was computed in: each of its
# values is rounded by up to half the dtype's epsilon, relatively (bfloat16: 2^-8, so a softmax
# sums to 1 only within ~4e-3; float16: 2^-11).
_SUM_TOLERANCE = {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}


def probabilities_like(outputs) -> bool:
  """Whether a batch of outputs looks like probabilities: non-negative, rows summing to 1 (within
  the rounding of the outputs' own dtype: a bfloat16 softmax sums to 1 only within ~2e-3)."""
  dtype = getattr(outputs, "dtype", None)
  name = getattr(dtype, "name", str(dtype))
  tolerance = max(1e-3, _SUM_TOLERANCE.get(name, 0.0))
  outputs = np.asarray(tf.cast(outputs, tf.float64) if tf.is_tensor(outputs) else outputs,
                       dtype=np.float64)
  return bool(outputs.ndim == 2 and outputs.shape[1] > 1 and outputs.min() >= 0.0 and
              np.allclose(outputs.sum(axis=1), 1.0, atol=tolerance))


def load(path: str, input_shape: Tuple[int, ...], outputs: int, regression: bool,
         outputs_are: str = "auto", sample: Optional[np.ndarray] = None,
         allow_unsafe: bool = False):
  """The imported teacher as a tf_keras model of the data's input shape, and whether its outputs
  were probabilities (then the model returns their logarithm).

  ``sample``: a batch of (normalised) inputs, used by ``outputs_are="auto"`` to tell
  probabilities from logits. ``allow_unsafe``: see :func:`open_model`.
  """
  call, shape, units, flavour = open_model(path, allow_unsafe)
  check_fits(path, shape, units, input_shape, outputs, regression)
  probabilities = outputs_are == "probabilities"
  if outputs_are == "auto" and not regression and sample is not None:
    probabilities = probabilities_like(call(tf.constant(sample, tf.float32)))
  inputs = keras.Input(shape=tuple(input_shape), name="teacher_input")
  model = keras.Model(inputs, _Imported(call, probabilities and not regression,
                                        name="imported_teacher")(inputs), name="teacher")
  model.kdprune_flavour = flavour
  return model, probabilities and not regression


class _Averaged(keras.layers.Layer):
  """Several teachers' outputs as one (:func:`losses.averaged_teacher_logits`; for regression the
  mean prediction)."""

  def __init__(self, temperature: float, regression: bool, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.temperature = float(temperature)
    self.regression = regression

  def call(self, outputs):  # pylint: disable=arguments-differ
    outputs = [tf.cast(o, tf.float32) for o in outputs]
    if self.regression:
      return tf.add_n(outputs) / float(len(outputs))
    from pipelines.train import losses  # pylint: disable=g-import-not-at-top
    return losses.averaged_teacher_logits(outputs, self.temperature)


def ensemble(teachers, input_shape: Tuple[int, ...], temperature: float, regression: bool):
  """One tf_keras model averaging ``teachers`` (each a model of :func:`load`): classification
  logits ``T * log(mean_i softmax(z_i / T))``, whose softmax at T is the teachers' mean
  probability at T; regression the mean prediction. ``kdprune_ensemble`` marks it."""
  inputs = keras.Input(shape=tuple(input_shape), name="teacher_input")
  for i, t in enumerate(teachers):
    t._name = "teacher_%d" % (i + 1)  # pylint: disable=protected-access  (unique in the model)
  outs = [t(inputs) for t in teachers]
  model = keras.Model(inputs, _Averaged(temperature, regression, name="averaged_teachers")(outs),
                      name="teacher")
  model.kdprune_flavour = "%d imported teachers, averaged" % len(teachers)
  model.kdprune_ensemble = True
  return model
