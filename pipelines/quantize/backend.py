"""The quantization backend seam: what the QAT stage and the export ask of the library that
fake-quantizes a student.

:func:`for_model` gives the backend for a stripped student; today the one backend is tfmot's
quantization-aware training (:mod:`pipelines.quantize.qat`, tf_keras students). A second backend
(Keras 3 students) implements the same :class:`QuantizeBackend` and is chosen here.
"""

import dataclasses
from typing import Callable

from models import keras3 as keras3_models
from pipelines.config.errors import ConfigError
from pipelines.quantize import qat


@dataclasses.dataclass(frozen=True)
class QuantizeBackend:
  """The operations on a quantization-aware student that the stages use.

  Attributes:
    name: the library.
    quantize: ``quantize(student, scheme) -> qmodel``: the student with fake-quantized weights
      and activations for ``scheme`` (``prune_preserve`` keeps the student's zeros).
    rebuild: ``rebuild(student, scheme, weights_path, rerun) -> qmodel``: the saved QAT model.
    zero_masks: ``zero_masks(student, layer_names) -> {weight name: kernel != 0}``.
    drift_report: ``drift_report(qmodel, student, masks) -> {layer: {"sparsity", "drift"}}``:
      how far training moved the student's zeros.
    remask: ``remask(qmodel, masks) -> {layer: weights re-zeroed}``.
    float_view: ``float_view(student, qmodel) -> student``: the QAT model's float weights in the
      student's layers, for the student's own sparsity report.
  """

  name: str
  quantize: Callable
  rebuild: Callable
  zero_masks: Callable
  drift_report: Callable
  remask: Callable
  float_view: Callable


def for_model(model) -> QuantizeBackend:
  """The backend that quantizes ``model``: tfmot for a tf_keras model; a one-line ConfigError for
  a model of another Keras."""
  if keras3_models.is_keras3(model):
    raise ConfigError("the student is a Keras 3 model (%s), which tfmot cannot quantize; build "
                      "it with tf_keras (models.compat.keras)" % type(model).__name__)
  return TFMOT


TFMOT = QuantizeBackend(name="tfmot", quantize=qat.quantize, rebuild=qat.rebuild,
                        zero_masks=qat.zero_masks, drift_report=qat.drift_report,
                        remask=qat.remask, float_view=qat.float_view)
