"""Export stage: the int8 student as TFLite and SavedModel, baselines, and a report measured on the files.

  kdprune-export --workdir=runs/demo        # after kdprune-qat

Writes ``<workdir>/export/<name>/`` (``<name>`` is ``--student_name``,
``default`` unless given):

* ``student_qat_int8.tflite``: the product, int8 weights and activations
  converted from the QAT model; ``saved_model/``: the QAT student as a
  SavedModel (``serving_default`` signature);
* baselines (``--export_baselines``): ``teacher_float.tflite`` (the float
  teacher, the default: the report's comparison), and on request
  ``student_float.tflite`` (the float pruned student),
  ``student_ptq_dynamic.tflite`` and ``student_ptq_int8.tflite``
  (post-training dynamic-range and full-integer quantization of it);
* ``report.json``, ``report.md``, ``accuracy_vs_size.png`` and a TensorBoard
  text summary of the table under ``tb/``;
* ``preprocessing.json`` (also under ``preprocessing`` in ``report.json``): what
  the models expect, so the folder can be served alone: the raw input's shape
  and dtype, the resizing and the normalisation as explicit numbers (the
  statistics fitted on train), the CSV feature columns, the task and the class
  names (see :meth:`pipelines.data.bundle.DatasetBundle.preprocessing`;
  ``kdprune-predict`` reads it). Every ``.tflite`` also carries it as the
  metadata entry ``kdprune_preprocessing``.

``--target`` adds a file per runtime beside the product (:mod:`pipelines.export.targets`: the
Edge TPU's, TFLite Micro's, XNNPACK's sparse float file), each checked against its runtime's
rules before any file is written (a file that breaks one is refused in one line naming the op
or tensor) and measured like the others; the tflm file is also run in TFLite Micro's own
interpreter on the test set (accuracy, smallest tensor arena, flash).

Every figure is measured on the exported files (see
:mod:`pipelines.export.tflite`): batch-1 latency with LiteRT's XNNPACK delegate and without it
(the builtin kernels), beside that of the same file with its zero weights filled, which says
whether its zeros made it faster. The stage fails if the product is not
integer-only (an op other than the input QUANTIZE and the output DEQUANTIZE
touches a float tensor; the op list is in ``report.json``'s ``product_ops``)
or if a pruned layer's weight tensor in an exported student holds fewer zeros
than that layer had in the student.
"""

from pipelines.config import EXPORT as NAME
from pipelines.config import PRODUCT, STUDENT, ExportConfig, stage_of
from pipelines.config.errors import ConfigError
from pipelines.data import sources
from pipelines.export import targets
from pipelines.runtime import upstream
from pipelines.runtime.execute import Stage, lazy

__all__ = ["NAME", "STAGE", "PRODUCT", "ExportConfig", "validate", "fingerprint_inputs", "run"]


def validate(config: ExportConfig) -> None:
  config.validate()
  for name in config.targets:  # a target this student can never meet: before any work
    refusal = targets.refusal_before_work(name, config.data.task)
    if refusal:
      raise ConfigError(refusal)
  sources.resolve(config.data)


def check_upstream(config: ExportConfig, workdir: str) -> None:
  """The finished QAT run and student it exports (read from the manifest only)."""
  upstream.export_inputs(workdir, config.name)


def fingerprint_inputs(config: ExportConfig, workdir: str) -> dict:
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity()}
  upstream.check_data_matches(workdir, stage_of(STUDENT, config.name), config.data,
                              "kdprune-student")
  for stage, entry in upstream.export_inputs(workdir, config.name).items():
    inputs[stage] = upstream.identity(entry)
  return inputs


run = lazy("pipelines.stages.export.convert")


STAGE = Stage(kind=NAME, config_type=ExportConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run, check_upstream=check_upstream,
              collective=False)
