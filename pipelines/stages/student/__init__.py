"""Student stage: distillation from the trained teacher while tfmot prunes the student gradually.

  kdprune-student --workdir=runs/demo                          # after kdprune-teacher
  kdprune-student --workdir=runs/demo --distill=false --student_name=hard_labels   # the ablation
  kdprune-student --workdir=runs/demo --pruning_structure=m_by_n --student_name=two_four

Writes ``<workdir>/student/<name>/``: the stripped ``model.keras`` (best
epoch at final sparsity), ``metrics.json`` (test accuracy, per-layer and total
sparsity, nonzero parameters), ``config.json``, ``metrics.jsonl`` and
TensorBoard logs under ``tb/`` (losses, accuracy, learning rate, per-layer
sparsity, HParams). The manifest records each student as ``student/<name>``.
"""

from models.spec import kernel_layers
from pipelines.config import STUDENT as NAME
from pipelines.config import TEACHER, StudentConfig, check_name  # noqa: F401
from pipelines.data import sources
from pipelines.prune import plan as prune_plan  # no TensorFlow at import
from pipelines.runtime import rundir, upstream
from pipelines.runtime.execute import Stage, lazy

__all__ = ["NAME", "STAGE", "StudentConfig", "validate", "fingerprint_inputs", "run"]


def validate(config: StudentConfig) -> None:
  """Every check that needs no model and no training, including whether the pruning schedule
  can finish within the planned epochs on this data."""
  config.validate()
  sources.check_augment(config.data, config.train.augment, "--student_augment")
  if config.path is not None:  # the user's student file: loaded (TensorFlow) to check it fits
    source = sources.resolve(config.data)
    from pipelines.train import student_source  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    student_source.check_file(config.path, source.input_shape, source.num_classes,
                              config.allow_unsafe)
  elif config.pruning.structure != "channels":  # channels: the layers shrink before tfmot sees them
    source = sources.resolve(config.data)
    layers = kernel_layers(config.model, source.input_shape, source.num_classes)
    if layers is not None:  # a built-in family: refuse "nothing would be pruned" before any work
      prune_plan.plan(layers, config.pruning)
  sizes = sources.split_sizes(config.data)
  if sizes is not None:
    per_epoch = -(-sizes["train"] // config.train.batch_size)
    steps = config.pruning.resolve_steps(per_epoch, config.train.epochs)
    if config.pruning.structure == "channels":
      prune_plan.channel_schedule(steps, per_epoch, config.train.epochs, config.pruning.channel_fraction,
                        config.pruning.exponent)


def check_upstream(config: StudentConfig, workdir: str) -> None:
  """The finished teacher it learns from (read from the manifest only: no data, no TensorFlow)."""
  if config.distill.enabled:
    upstream.teacher_entry(workdir)


def fingerprint_inputs(config: StudentConfig, workdir: str) -> dict:
  """The student's config, its data, and which teacher run it learns from."""
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity()}
  if config.distill.enabled:
    inputs["teacher"] = upstream.teacher_inputs(workdir, config.data)
  if config.weights is not None:  # a changed file reruns the student
    inputs["weights_file"] = rundir.content_hash(config.weights)
  if config.path is not None:  # likewise the student's own model file
    inputs["student_file"] = rundir.content_hash(config.path)
  return inputs


run = lazy("pipelines.stages.student.train")


STAGE = Stage(kind=NAME, config_type=StudentConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run, check_upstream=check_upstream)
