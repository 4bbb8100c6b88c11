"""QAT stage: quantization-aware fine-tuning of the pruned student that keeps its sparsity.

  kdprune-qat --workdir=runs/demo                       # after kdprune-student
  kdprune-qat --workdir=runs/demo --qat_scheme=default  # plain QAT (zeros may drift; re-masked)

Loads the stripped student ``<workdir>/student/<name>/model.keras``, applies
tfmot's quantization-aware training with the sparsity-preserving scheme
(``Default8BitPrunePreserveQuantizeScheme``: the fake-quantized kernels are
multiplied by the student's zero mask) or plain 8-bit QAT, and fine-tunes it
under the same distillation loss as the student stage (the teacher keeps
guiding). Early stopping restores the best epoch.

After training the float kernels are compared with the student's zeros:
weights that drifted away from zero are set back to zero and counted
(tfmot's fix for drifting zeros was never merged: #720/#721), the sparsity
is measured again per layer, and the stage fails if it is still short of the
student's target.

Writes ``<workdir>/qat/<name>/``: ``model.weights.h5`` (the QAT model's
weights; :func:`load_model` rebuilds the model around them, since tfmot's
quantized models do not load back from ``.keras``), ``metrics.json``,
``config.json``, ``metrics.jsonl`` and TensorBoard logs under ``tb/``.
"""

import dataclasses
import json
import os
import time

from pipelines import configs, rundir, sources
from pipelines import student as student_lib
from pipelines.errors import ConfigError, StageError
from pipelines.stage import StageResult

NAME = "qat"
SCHEMES = ("prune_preserve", "default")


@dataclasses.dataclass(frozen=True)
class QatConfig:
  """Everything that decides the QAT fine-tuning of one student."""

  data: configs.DataConfig = configs.DataConfig()
  train: configs.TrainConfig = configs.TrainConfig(epochs=4, learning_rate=1e-4, patience=2)
  distill: configs.DistillConfig = configs.DistillConfig()
  scheme: str = "prune_preserve"
  name: str = "default"  # the student's name (--student_name)
  progress: str = "auto"

  @property
  def stage(self) -> str:
    return "%s/%s" % (NAME, self.name)

  @property
  def student_stage(self) -> str:
    return "%s/%s" % (student_lib.NAME, self.name)

  def validate(self) -> None:
    self.data.validate()
    student_lib.check_name(self.name)
    if self.scheme not in SCHEMES:
      raise ConfigError("--qat_scheme=%s is not one of %s" % (self.scheme, ", ".join(SCHEMES)))
    self.train.validate("qat", self.data.task)
    self.distill.validate()
    self.distill.check_task(self.data.task)
    self.distill.check_augment(self.train.augment, "--qat_augment")
    sources.resolve(self.data)
    sources.check_augment(self.data, self.train.augment, "--qat_augment")

  def resolved(self) -> dict:
    out = {"data": configs.resolved(self.data), "train": configs.resolved(self.train),
           "scheme": self.scheme, "name": self.name}
    if self.distill.enabled:
      out["distill"] = self.distill.resolved_for(self.data.task)
      out["distill"]["teacher_outputs"] = self.distill.resolved_teacher_outputs(
          self.train.augment != "none")
    else:
      out["distill"] = {"enabled": False}
    return out


def student_entry(workdir: str, name: str) -> dict:
  return student_lib.finished_entry(
      workdir, "%s/%s" % (student_lib.NAME, name),
      student_lib.command("kdprune-student", name))


def fingerprint_inputs(config: QatConfig, workdir: str) -> dict:
  """The QAT config, its data, and which student (and teacher) runs it starts from."""
  entry = student_entry(workdir, config.name)
  student_lib.check_data_matches(workdir, config.student_stage, config.data, "kdprune-student")
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity(),
            "student": {"fingerprint": entry.get("fingerprint"), "finished": entry.get("finished")}}
  if config.distill.enabled:
    teacher = student_lib.teacher_entry(workdir)
    student_lib.check_data_matches(workdir, "teacher", config.data, "kdprune-teacher")
    inputs["teacher"] = {"fingerprint": teacher.get("fingerprint"),
                         "finished": teacher.get("finished")}
  return inputs


def quantize(student, scheme: str):
  """``student`` (a stripped Functional model) with tfmot's QAT wrappers for ``scheme``."""
  # pylint: disable=g-import-not-at-top
  from pipelines.compat import keras  # noqa: F401  (Keras 2 before tfmot)
  import tensorflow_model_optimization as tfmot
  # pylint: enable=g-import-not-at-top
  qk = tfmot.quantization.keras
  if scheme == "prune_preserve":
    quant_scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
  else:
    quant_scheme = qk.default_8bit.Default8BitQuantizeScheme()
  try:
    with qk.quantize_scope():
      return qk.quantize_apply(qk.quantize_annotate_model(student), quant_scheme)
  except (ValueError, RuntimeError, TypeError) as e:
    raise StageError(NAME, "tfmot cannot quantize the student: %s" % (
        " ".join(str(e).split())[:400],)) from None


def zero_masks(student, layer_names):
  """``{weight name: kernel != 0}`` for the prunable kernels of ``layer_names`` in ``student``."""
  from pipelines import pruning  # pylint: disable=g-import-not-at-top
  masks = {}
  for layer in student.layers:
    if layer.name in layer_names:
      for w in pruning.prunable_weights(layer):
        masks[w.name] = w.numpy() != 0
  return masks


def remask(qmodel, masks) -> dict:
  """Sets kernel weights of ``qmodel`` that drifted away from the mask's zeros back to 0.

  Returns ``{weight name: number of weights re-zeroed}``.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  variables = {v.name: v for v in qmodel.weights}
  drifted = {}
  for name, mask in masks.items():
    var = variables.get(name)
    if var is None:
      raise StageError(NAME, "the quantized model has no weight %s to re-mask (weights: %s)" % (
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
    raise StageError(NAME, "the quantized model lacks the student's weights %s" % ", ".join(missing))
  for w in student.weights:
    w.assign(variables[w.name])
  return student


def run(config: QatConfig, workdir: str) -> StageResult:
  """Fine-tunes the student with QAT; saves the weights under ``<workdir>/qat/<name>/``."""
  # pylint: disable=g-import-not-at-top
  from pipelines.compat import keras
  from pipelines import data as data_lib
  from pipelines import backup, distill, distribute, pruning, summaries, training
  # pylint: enable=g-import-not-at-top
  config.validate()
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  run_dir = rundir.RunDir(workdir)
  entry = student_entry(workdir, config.name)
  student_path = run_dir.abspath(entry["artifacts"]["model"])
  with open(run_dir.abspath(entry["artifacts"]["config"])) as f:
    student_config = json.load(f)
  with open(run_dir.abspath(entry["artifacts"]["metrics"])) as f:
    student_metrics = json.load(f)
  plan = student_metrics["pruning"]["plan"]
  target = float(student_metrics["target_sparsity"])
  m_by_n = (student_config["pruning"]["m_by_n"]
            if student_config["pruning"]["structure"] == "m_by_n" else None)

  bundle = data_lib.load(config.data)
  student = student_lib.load_model(student_path)
  if tuple(student.input_shape[1:]) != bundle.input_shape or \
      tuple(student.output_shape[1:]) != (bundle.num_classes,):
    raise ConfigError("the student in %s takes %s and predicts %s classes, but --dataset=%s "
                      "gives %s and %d classes" % (
                          student_path, tuple(student.input_shape[1:]), student.output_shape[-1],
                          config.data.dataset, bundle.input_shape, bundle.num_classes))
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  teacher = student_lib.teacher_for_training(workdir, bundle, config.data, config.distill, cfg)
  train_ds, mode, cache_seconds = distill.training_batches(
      bundle, teacher, config.distill, cfg, seed,
      cache_path=(student_lib.teacher_logits_path(workdir, config.data)
                  if teacher is not None else None))
  pruned_layers = [n for n, why in plan.items() if why == "prune"]
  masks = zero_masks(student, pruned_layers)
  with distribute.strategy().scope():
    qmodel = quantize(student, config.scheme)
    trainer = distill.DistillationTrainer(
        qmodel, teacher=teacher if mode == "online" else None,
        temperature=config.distill.temperature, alpha=config.distill.alpha,
        distill=config.distill.enabled, task=config.data.task,
        regression_loss=config.data.regression_loss)
    trainer.compile(optimizer=training.make_optimizer(cfg, steps_per_epoch),
                    steps_per_execution=cfg.steps_per_execution)

  # Non-chief workers of a multi-worker run write to a private directory.
  stage_dir = distribute.output_dir(run_dir.stage_dir(config.stage))
  backup_dir, fp, pending = backup.locate(workdir, config.stage)
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)
  # No schedule here: every epoch counts, and the best one is restored at the end.
  early = pruning.PruningAwareEarlyStopping(
      qmodel, final_step=0, monitor=cfg.monitor, patience=cfg.patience, min_delta=cfg.min_delta,
      step_fn=lambda: 0, stage=config.stage)
  # The student (not the trainer, which also holds the teacher) and the optimizer.
  saver = backup.StageBackup(backup_dir, fp, qmodel, trainer.optimizer, qmodel.trainable_variables,
                             early, write_directory=distribute.output_dir(backup_dir))
  done, initial_epoch = backup.resume(saver, config.stage, jsonl, cfg.epochs)
  callbacks = [summaries.NonFiniteGuard(config.stage, "--qat_learning_rate"), early,
               summaries.tensorboard_callback(tb_dir), summaries.MetricsLogger(jsonl),
               saver]  # last: backs up the epoch after early stopping has judged it
  print("[%s] %s QAT of %s (%d parameters, sparsity %.3f); teacher outputs: %s" % (
      config.stage, config.scheme, student_path, student.count_params(),
      student_metrics["sparsity"], mode))
  start = time.time()
  history = trainer.fit(train_ds, validation_data=bundle.batches("validation", cfg.batch_size),
                        epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                        verbose=training.keras_verbosity(config.progress))
  train_seconds = time.time() - start
  epochs_run = done + len(history.history.get("loss", []))

  drifted = remask(qmodel, masks)
  view = float_view(student, qmodel)
  targets = {name: float(layer.get("target", target))
             for name, layer in student_metrics["pruning"]["layers"].items()}
  report = pruning.sparsity_report(view, plan, m_by_n, targets=targets)
  val = training.evaluate(qmodel, bundle.batches("validation", 256), config.data)
  test = training.evaluate(qmodel, bundle.batches("test", 256), config.data)
  headline = "test_" + configs.headline(config.data.task)[0]
  metrics = {
      **configs.split_metrics(val=val, test=test),
      "student_" + headline: float(entry["metrics"][headline]),
      "sparsity": report["sparsity"], "target_sparsity": target,
      "student_sparsity": float(student_metrics["sparsity"]),
      "params": report["params"], "nonzero_params": report["nonzero_params"],
      "remasked_weights": int(sum(drifted.values())),
      "scheme": config.scheme, "teacher_outputs": mode,
      "best_epoch": (early.best_epoch + 1) if early.best_epoch is not None else None,
      "epochs_run": epochs_run, "stopped_early": early.stopped_epoch is not None,
      "teacher_cache_seconds": round(cache_seconds, 2), "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run - done), 3),
      "resumed_after_epoch": done or None,
      "student_finished": entry.get("finished"),
  }
  metrics_path = os.path.join(stage_dir, "metrics.json")
  rundir.write_json(metrics_path, {**metrics, "remasked": drifted, "layers": report["layers"],
                                   "data": bundle.describe()})
  pruning.check_sparsity(report, target, config.stage, m_by_n, cause=(
      "QAT moved weights the student had pruned (%d re-zeroed) and the sparsity still fell; try "
      "--qat_scheme=prune_preserve" % metrics["remasked_weights"]))

  weights_path = os.path.join(stage_dir, "model.weights.h5")
  with rundir.atomic_path(weights_path) as tmp:
    qmodel.save_weights(tmp)
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(config_path, config.resolved())
  summaries.write_hparams(tb_dir, trial_id="%s/%s" % (os.path.basename(run_dir.workdir),
                                                       config.stage),
                          hparams=config.resolved(), metrics={
                              **summaries.final_metrics(metrics),
                              "final/sparsity": metrics["sparsity"],
                              "final/remasked_weights": float(metrics["remasked_weights"])})
  print("[%s] %s (student %.5g) at sparsity %.4f; %d drifted weights re-zeroed "
        "(%.1f s) -> %s" % (config.stage, configs.describe_result(metrics),
                            metrics["student_" + headline], metrics["sparsity"],
                            metrics["remasked_weights"], train_seconds, weights_path))
  saver.discard()
  return StageResult(
      artifacts={"model": weights_path, "metrics": metrics_path, "config": config_path},
      metrics=metrics)


def load_model(workdir: str, name: str = "default"):
  """Rebuilds the QAT model of student ``name`` from its student and the saved weights.

  The prune-preserving quantizers take their masks from the kernels they are
  built on, so the model is rebuilt on the very student QAT started from; a
  student retrained since then is refused.
  """
  run_dir = rundir.RunDir(workdir)
  stage = "%s/%s" % (NAME, name)
  entry = student_lib.finished_entry(workdir, stage, "kdprune-qat")
  s_entry = student_entry(workdir, name)
  if entry["metrics"].get("student_finished") != s_entry.get("finished"):
    raise ConfigError("the student %s was retrained after %s; rerun kdprune-qat --workdir=%s" % (
        s_entry["artifacts"]["model"], stage, workdir))
  with open(run_dir.abspath(entry["artifacts"]["config"])) as f:
    scheme = json.load(f)["scheme"]
  student = student_lib.load_model(run_dir.abspath(s_entry["artifacts"]["model"]))
  qmodel = quantize(student, scheme)
  path = run_dir.abspath(entry["artifacts"]["model"])
  try:
    qmodel.load_weights(path)
  except (OSError, ValueError) as e:
    raise StageError(NAME, "cannot load %s (%s); rerun kdprune-qat --workdir=%s --force" % (
        path, " ".join(str(e).split())[:200], workdir)) from None
  return qmodel


# ----------------------------------------------------------------------------
# Entry point.


def config_from_flags() -> QatConfig:
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  return kflags.qat_config_from_flags()


def main(argv):
  del argv
  from pipelines import stage  # pylint: disable=g-import-not-at-top
  config = config_from_flags()
  stage.main_from_flags(config, run, fingerprint_inputs)


def entry_point():
  from pipelines import cli  # pylint: disable=g-import-not-at-top
  cli.entry(main, "kdprune-qat")


if __name__ == "__main__":
  entry_point()
