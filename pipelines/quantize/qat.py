"""Quantization-aware training with tfmot: wrapping the stripped student, keeping its zeros.

:func:`quantize` applies tfmot's QAT wrappers with the sparsity-preserving
scheme (``Default8BitPrunePreserveQuantizeScheme``: the fake-quantized kernels
are multiplied by the student's zero mask) or plain 8-bit QAT. tfmot's fix for
drifting zeros was never merged (#720/#721), so :func:`remask` sets weights
that left zero back to zero and counts them. :func:`rebuild` restores a saved
QAT model on its student (tfmot's quantized models do not load from ``.keras``).
"""

import numpy as np

from models.compat import keras, tf  # Keras 2 before tfmot
from pipelines.config.errors import StageError
from pipelines.config.stages import QAT
from pipelines.prune import magnitude as pruning

import tensorflow_model_optimization as tfmot  # noqa: E402  (after compat: Keras 2)


class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
  """Fake-quantizes a layer's output only (no weights), as tfmot's registry does for ``Add``."""

  def get_weights_and_quantizers(self, layer):
    return []

  def get_activations_and_quantizers(self, layer):
    return []

  def set_quantize_weights(self, layer, quantize_weights):
    pass

  def set_quantize_activations(self, layer, quantize_activations):
    pass

  def get_output_quantizers(self, layer):
    return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

  def get_config(self):
    return {}


class NoOpQuantizeConfig(OutputQuantizeConfig):
  """Quantizes nothing (tfmot's own ``NoOpQuantizeConfig`` is not public)."""

  def get_output_quantizers(self, layer):
    return []


# Layers of the Keras Applications families (models/applications.py) that tfmot's default 8-bit
# registry refuses: squeeze-excite / hard-swish Multiply and the hard-sigmoid's Rescaling get their
# output quantized; Resizing none (TFLite's int8 RESIZE_BILINEAR keeps its input's scale).
_EXTRA_CONFIGS = {
    "Multiply": OutputQuantizeConfig,
    "Rescaling": OutputQuantizeConfig,
    "Resizing": NoOpQuantizeConfig,
}


def annotate(student):
  """``student`` with tfmot's QAT annotations, and a quantize config for the layers of
  :data:`_EXTRA_CONFIGS` (the very layer objects: the weights are shared)."""
  qk = tfmot.quantization.keras
  if not any(type(l).__name__ in _EXTRA_CONFIGS for l in student.layers):
    return qk.quantize_annotate_model(student)

  def wrap(layer):
    config = _EXTRA_CONFIGS.get(type(layer).__name__)
    return qk.quantize_annotate_layer(layer, config()) if config else layer

  return qk.quantize_annotate_model(keras.models.clone_model(student, clone_function=wrap))


# tfmot's QAT wrappers and quantizers are graph-safe Python: the model is built without AutoGraph
# (converting them was ~1.5 s per process), as the stages' training functions run (distill.py).
@tf.autograph.experimental.do_not_convert
def quantize(student, scheme: str):
  """``student`` (a stripped Functional model) with tfmot's QAT wrappers for ``scheme``."""
  qk = tfmot.quantization.keras
  if scheme == "prune_preserve":
    quant_scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
  else:
    quant_scheme = qk.default_8bit.Default8BitQuantizeScheme()
  try:
    with qk.quantize_scope({c.__name__: c for c in (OutputQuantizeConfig, NoOpQuantizeConfig)}):
      return qk.quantize_apply(annotate(student), quant_scheme)
  except (ValueError, RuntimeError, TypeError) as e:
    raise StageError(QAT, "tfmot cannot quantize the student: %s" % (
        " ".join(str(e).split())[:400],)) from None


def zero_masks(student, layer_names):
  """``{weight name: kernel != 0}`` for the prunable kernels of ``layer_names`` in ``student``."""
  masks = {}
  for layer in student.layers:
    if layer.name in layer_names:
      for w in pruning.prunable_weights(layer):
        masks[w.name] = w.numpy() != 0
  return masks


def drift_report(qmodel, student, masks) -> dict:
  """Per pruned layer of ``student``, its kernels in ``qmodel`` now (call it before :func:`remask`).

  ``masks`` is :func:`zero_masks`' ``{weight name: kernel != 0}``. Returns ``{layer:
  {"weights", "zeros", "sparsity", "drifted", "drift"}}``: the zeros and sparsity of the
  layer's kernels in the QAT model, and how many (and what fraction) of the student's zeros
  are no longer zero.
  """
  variables = {v.name: v for v in qmodel.weights}
  report = {}
  for layer in student.layers:
    kernels = [w for w in pruning.prunable_weights(layer) if w.name in masks]
    if not kernels:
      continue
    size = zeros = drifted = 0
    for w in kernels:
      var = variables.get(w.name)
      if var is None:
        raise StageError(QAT, "the quantized model has no weight %s (weights: %s)" % (
            w.name, ", ".join(sorted(variables))))
      value = var.numpy()
      size += value.size
      zeros += int(np.sum(value == 0))
      drifted += int(np.sum((value != 0) & ~masks[w.name]))
    report[layer.name] = {"weights": int(size), "zeros": int(zeros),
                          "sparsity": round(zeros / max(1, size), 6), "drifted": int(drifted),
                          "drift": round(drifted / max(1, size), 6)}
  return report


def remask(qmodel, masks) -> dict:
  """Sets kernel weights of ``qmodel`` that drifted away from the mask's zeros back to 0.

  Returns ``{weight name: number of weights re-zeroed}``.
  """
  variables = {v.name: v for v in qmodel.weights}
  drifted = {}
  for name, mask in masks.items():
    var = variables.get(name)
    if var is None:
      raise StageError(QAT, "the quantized model has no weight %s to re-mask (weights: %s)" % (
          name, ", ".join(sorted(variables))))
    value = var.numpy()
    drifted[name] = int(np.sum((value != 0) & ~mask))
    if drifted[name]:
      var.assign(value * mask)
  return drifted


def float_view(student, qmodel):
  """Copies the QAT model's float weights into ``student`` (same layers, matched by weight name).

  What the fake-quantized model computes before rounding; used to measure
  sparsity per layer with the student's own report.
  """
  variables = {v.name: v for v in qmodel.weights}
  missing = [w.name for w in student.weights if w.name not in variables]
  if missing:
    raise StageError(QAT, "the quantized model lacks the student's weights %s" % ", ".join(missing))
  for w in student.weights:
    w.assign(variables[w.name])
  return student


def rebuild(student, scheme: str, weights_path: str, rerun: str):
  """The QAT model of ``student`` (the very student QAT started from: the prune-preserving
  quantizers take their masks from its kernels) with the weights saved at ``weights_path``.

  ``rerun`` is the command named when the file cannot be loaded.
  """
  qmodel = quantize(student, scheme)
  try:
    qmodel.load_weights(weights_path)
  except (OSError, ValueError) as e:
    raise StageError(QAT, "cannot load %s (%s); rerun %s --force" % (
        weights_path, " ".join(str(e).split())[:200], rerun)) from None
  return qmodel
