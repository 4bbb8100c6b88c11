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

import json
import os

from models.spec import ModelSpec, kernel_layers, layer_names
from pipelines.config import STUDENT as NAME
from pipelines.config import IMPORT_RECORD, TEACHER, StudentConfig, check_name  # noqa: F401
from pipelines.config.errors import ConfigError
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
  if config.distill.feature_distill and config.pruning.structure == "channels":
    raise ConfigError("--feature_distill with --pruning_structure=channels: the student's layers "
                      "shrink between epochs, and a hint's projection takes their width; drop one")
  if config.distill.feature_distill:  # a built-in family's names are known without TensorFlow
    source = sources.resolve(config.data)
    _check_hint_names(config.model, source.input_shape, [h[1] for h in
                                                         config.distill.feature_distill],
                      "student")
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
      prune_plan.channel_schedule(steps, per_epoch, config.train.epochs,
                                  config.pruning.channel_fraction, config.pruning.exponent)


def check_upstream(config: StudentConfig, workdir: str) -> None:
  """The finished teacher it learns from (read from the manifest only: no data, no TensorFlow)."""
  if config.distill.enabled:
    entry = upstream.teacher_entry(workdir)
    if config.distill.feature_distill:
      _check_teacher_hints(config, workdir, entry)


def _check_hint_names(spec: ModelSpec, input_shape, names, role: str) -> None:
  known = layer_names(spec, input_shape)
  if known is None:
    return  # checked once the model is built, before training (pipelines/train/features.py)
  for name in names:
    if name not in known:
      raise ConfigError("--feature_distill: the %s has no layer %r; its layers: %s" % (
          role, name, ", ".join(known)))


def _check_teacher_hints(config: StudentConfig, workdir: str, entry: dict) -> None:
  """The hints' teacher layers, from the finished teacher's config.json (no TensorFlow)."""
  run_dir = rundir.RunDir(workdir)
  if os.path.basename(entry.get("artifacts", {}).get("model", "")) == IMPORT_RECORD:
    raise ConfigError("--feature_distill needs the teacher's layers, but an imported teacher "
                      "(--teacher_path) is run as one opaque layer; distil it without hints")
  path = entry.get("artifacts", {}).get("config")
  try:
    with open(run_dir.abspath(path)) as f:
      model = json.load(f)["model"]
    spec = ModelSpec(**model)
  except (OSError, ValueError, KeyError, TypeError):
    return  # checked once the teacher is loaded
  _check_hint_names(spec, sources.resolve(config.data).input_shape,
                    [h[0] for h in config.distill.feature_distill], "teacher")


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
