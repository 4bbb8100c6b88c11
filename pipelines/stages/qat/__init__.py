"""QAT stage: quantization-aware fine-tuning of the pruned student that keeps its sparsity.

  kdprune-qat --workdir=runs/demo                       # after kdprune-student
  kdprune-qat --workdir=runs/demo --qat_scheme=default  # plain QAT (zeros may drift; re-masked)

Loads the stripped student ``<workdir>/student/<name>/model.keras``, applies
tfmot's quantization-aware training with the sparsity-preserving scheme
(``Default8BitPrunePreserveQuantizeScheme``: the fake-quantized kernels are
multiplied by the student's zero mask) or plain 8-bit QAT, and fine-tunes it
under the same distillation loss as the student stage (the teacher keeps
guiding). Early stopping restores the best epoch.

After training the float kernels are compared with the student's zeros, per
pruned layer, before anything is repaired (``sparsity_before_remask``,
``drift`` per layer and ``max_drift`` in ``metrics.json``): weights that
drifted away from zero are then set back to zero and counted
(tfmot's fix for drifting zeros was never merged: #720/#721), the sparsity
is measured again per layer, and the stage fails if it is still short of the
student's target.

Writes ``<workdir>/qat/<name>/``: ``model.weights.h5`` (the QAT model's
weights; :func:`load_model` rebuilds the model around them, since tfmot's
quantized models do not load back from ``.keras``), ``saved_model/`` (its
``serving_default`` function, what the export converts), ``metrics.json``,
``config.json``, ``metrics.jsonl`` and TensorBoard logs under ``tb/``.
"""

from pipelines.config import QAT as NAME
from pipelines.config import STUDENT, TEACHER, QatConfig  # noqa: F401
from pipelines.data import sources
from pipelines.runtime import upstream
from pipelines.runtime.execute import Stage, lazy

__all__ = ["NAME", "STAGE", "QatConfig", "validate", "fingerprint_inputs", "run", "load_model"]


def validate(config: QatConfig) -> None:
  config.validate()
  sources.resolve(config.data)
  sources.check_augment(config.data, config.train.augment, "--qat_augment")


def check_upstream(config: QatConfig, workdir: str) -> None:
  """The finished student it starts from (read from the manifest only)."""
  upstream.student_entry(workdir, config.name)


def fingerprint_inputs(config: QatConfig, workdir: str) -> dict:
  """The QAT config, its data, and which student (and teacher) runs it starts from."""
  entry = upstream.student_entry(workdir, config.name)
  upstream.check_data_matches(workdir, config.student_stage, config.data, "kdprune-student")
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity(),
            "student": upstream.identity(entry)}
  if config.distill.enabled:
    inputs["teacher"] = upstream.teacher_inputs(workdir, config.data)
  return inputs


run = lazy("pipelines.stages.qat.train")
load_model = lazy("pipelines.stages.qat.train", "load_model")


STAGE = Stage(kind=NAME, config_type=QatConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run, check_upstream=check_upstream)
