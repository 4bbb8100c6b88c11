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

import os
import time

from pipelines.config import QAT as NAME
from pipelines.config import STUDENT, TEACHER, QatConfig, tasks  # noqa: F401
from pipelines.config.errors import ConfigError
from pipelines.data import sources
from pipelines.runtime import progress, rundir, timing, upstream
from pipelines.runtime.execute import Stage, StageResult

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


def run(config: QatConfig, workdir: str) -> StageResult:
  """Fine-tunes the student with QAT; saves the weights under ``<workdir>/qat/<name>/``."""
  # TensorFlow is imported here, not at the top: flags are checked before it loads.
  # pylint: disable=g-import-not-at-top
  from models.compat import keras
  from pipelines.data import bundle as data_lib
  from pipelines.export import tflite
  from pipelines.prune import magnitude as pruning
  from pipelines.quantize import qat
  from pipelines.runtime import distribute
  from pipelines.train import backup, callbacks, distill, evaluation, optimizers, summaries
  # pylint: enable=g-import-not-at-top
  validate(config)
  timing.lap("startup")
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  run_dir = rundir.RunDir(workdir)
  upstream_student = upstream.student_record(workdir, config.name)
  student_path = upstream_student.model_path
  plan, target = upstream_student.plan, upstream_student.target_sparsity
  m_by_n = upstream_student.m_by_n

  bundle = data_lib.load(config.data)
  timing.lap("data")
  student = distill.load_keras_model(student_path)
  if tuple(student.input_shape[1:]) != bundle.input_shape or \
      tuple(student.output_shape[1:]) != (bundle.num_classes,):
    raise ConfigError("the student in %s takes %s and predicts %s classes, but --dataset=%s "
                      "gives %s and %d classes" % (
                          student_path, tuple(student.input_shape[1:]), student.output_shape[-1],
                          config.data.dataset, bundle.input_shape, bundle.num_classes))
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  teacher = distill.teacher_for_training(workdir, bundle, config.data, config.distill, cfg)
  timing.lap("build")
  train_ds, mode, cache_seconds = distill.training_batches(
      bundle, teacher, config.distill, cfg, seed,
      cache_path=(upstream.teacher_logits_path(workdir, config.data)
                  if teacher is not None else None))
  timing.lap("teacher_outputs")
  masks = qat.zero_masks(student, upstream_student.pruned_layers)
  with distribute.strategy().scope():
    qmodel = qat.quantize(student, config.scheme)
    trainer = distill.DistillationTrainer(
        qmodel, teacher=teacher if mode == "online" else None,
        temperature=config.distill.temperature, alpha=config.distill.alpha,
        distill=config.distill.enabled, task=config.data.task,
        regression_loss=config.data.regression_loss)
    trainer.compile(optimizer=optimizers.make_optimizer(cfg, steps_per_epoch),
                    steps_per_execution=cfg.steps_per_execution)
  timing.lap("build")

  # Non-chief workers of a multi-worker run write to a private directory.
  stage_dir = distribute.output_dir(run_dir.stage_dir(config.stage))
  backup_dir, fp, pending = backup.locate(workdir, config.stage)
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)
  # No schedule here: every epoch counts, and the best one is restored at the end.
  early = callbacks.PruningAwareEarlyStopping(
      qmodel, final_step=0, monitor=cfg.monitor, patience=cfg.patience, min_delta=cfg.min_delta,
      step_fn=lambda: 0, stage=config.stage)
  # The student (not the trainer, which also holds the teacher) and the optimizer.
  saver = backup.StageBackup(backup_dir, fp, qmodel, trainer.optimizer, qmodel.trainable_variables,
                             early, write_directory=distribute.output_dir(backup_dir))
  done, initial_epoch = backup.resume(saver, config.stage, jsonl, cfg.epochs)
  fit_callbacks = [summaries.NonFiniteGuard(config.stage, "--qat_learning_rate"), early,
               summaries.tensorboard_callback(tb_dir), summaries.MetricsLogger(jsonl),
               saver]  # last: backs up the epoch after early stopping has judged it
  progress.say("[%s] %s QAT of %s (%d parameters, sparsity %.3f); teacher outputs: %s" % (
      config.stage, config.scheme, student_path, student.count_params(),
      upstream_student.sparsity, mode))
  start = time.time()
  history = trainer.fit(train_ds, validation_data=bundle.batches("validation", cfg.batch_size),
                        epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=fit_callbacks,
                        verbose=callbacks.keras_verbosity(config.progress))
  train_seconds = time.time() - start
  epochs_run = done + len(history.history.get("loss", []))
  timing.lap("training")

  # Measured before re-masking (afterwards every zero is back): how far QAT moved the zeros.
  before = qat.drift_report(qmodel, student, masks)
  max_drift = max([e["drift"] for e in before.values()] or [0.0])
  if max_drift > 0:
    progress.say("[%s] QAT moved pruned weights away from zero (max drift %.4f of a layer: %s); "
                 "re-zeroing them" % (config.stage, max_drift, ", ".join(
                     "%s %.4f" % (n, e["drift"]) for n, e in before.items() if e["drift"])))
  drifted = qat.remask(qmodel, masks)
  view = qat.float_view(student, qmodel)
  report = pruning.sparsity_report(view, plan, m_by_n, targets=upstream_student.layer_targets())
  val = evaluation.evaluate(qmodel, bundle.batches("validation", 256), config.data)
  test = evaluation.evaluate(qmodel, bundle.batches("test", 256), config.data)
  timing.lap("evaluation")
  headline = "test_" + tasks.headline(config.data.task)[0]
  metrics = {
      **tasks.split_metrics(val=val, test=test),
      "student_" + headline: float(upstream_student.metrics[headline]),
      "sparsity": report["sparsity"], "target_sparsity": target,
      "student_sparsity": upstream_student.sparsity,
      "params": report["params"], "nonzero_params": report["nonzero_params"],
      "remasked_weights": int(sum(drifted.values())),
      "max_drift": max_drift,
      "scheme": config.scheme, "teacher_outputs": mode, **distill.agreement_metrics(history),
      "best_epoch": (early.best_epoch + 1) if early.best_epoch is not None else None,
      "epochs_run": epochs_run, "stopped_early": early.stopped_epoch is not None,
      "teacher_cache_seconds": round(cache_seconds, 2), "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run - done), 3),
      "resumed_after_epoch": done or None,
      "student_finished": upstream_student.finished,
  }
  metrics_path = os.path.join(stage_dir, "metrics.json")
  rundir.write_json(metrics_path, {**metrics, "remasked": drifted, "layers": report["layers"],
                                   "sparsity_before_remask": {
                                       n: e["sparsity"] for n, e in before.items()},
                                   "drift": {n: e["drift"] for n, e in before.items()},
                                   "data": bundle.describe()})
  pruning.check_sparsity(report, target, config.stage, m_by_n, cause=(
      "QAT moved weights the student had pruned (%d re-zeroed) and the sparsity still fell; try "
      "--qat_scheme=prune_preserve" % metrics["remasked_weights"]))

  weights_path = os.path.join(stage_dir, "model.weights.h5")
  with rundir.atomic_path(weights_path) as tmp:
    qmodel.save_weights(tmp)
  # The serving SavedModel the export converts: it need not rebuild the QAT model with tfmot
  # (9.6 s of a MobileNetV2 export's 22.6 s; BUILD_NOTES "Test suite").
  serving_path = os.path.join(stage_dir, "saved_model")
  serving_model = _serving_copy(qmodel, student, config.scheme)
  if serving_model is not None:
    with rundir.atomic_path(serving_path) as tmp:
      tflite.save_serving(serving_model, tmp, autograph=False)
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(config_path, config.resolved())
  summaries.write_hparams(tb_dir, trial_id="%s/%s" % (os.path.basename(run_dir.workdir),
                                                       config.stage),
                          hparams=config.resolved(), metrics={
                              **summaries.final_metrics(metrics),
                              "final/sparsity": metrics["sparsity"],
                              "final/remasked_weights": float(metrics["remasked_weights"])})
  progress.say("[%s] %s (student %.5g) at sparsity %.4f; %d drifted weights re-zeroed "
        "(%.1f s) -> %s" % (config.stage, tasks.describe_result(metrics),
                            metrics["student_" + headline], metrics["sparsity"],
                            metrics["remasked_weights"], train_seconds, weights_path))
  saver.discard()
  timing.lap("saving")
  return StageResult(
      artifacts={"model": weights_path, "saved_model": serving_path, "metrics": metrics_path,
                 "config": config_path},
      metrics=metrics)


def _serving_copy(qmodel, student, scheme: str):
  """The model whose serving function the chief saves: ``qmodel`` itself, or, when it was built
  under a distribution strategy, a copy with the same weights in variables of its own (None on a
  non-chief worker, which saves nothing).

  A function traced over a strategy's variables cannot be saved (``tf.saved_model.save``: "uses
  distributed variables in certain way"): reading a batch-norm statistic, a sync-on-read variable,
  is an all-reduce across the replicas (across the workers under ``MultiWorkerMirroredStrategy``),
  and a serving function must hold no collective. Every worker reads the weights (those reads are
  the all-reduce, so all of them take part); the chief alone builds the copy outside the strategy's
  scope. The copy is quantized from ``student`` (QAT's float weights, re-masked: the
  prune-preserving quantizers take their masks from its zeros, which are QAT's zeros) and gets every
  weight of ``qmodel``: the same function, the same file after conversion.
  """
  # pylint: disable=g-import-not-at-top
  from pipelines.quantize import qat
  from pipelines.runtime import distribute
  # pylint: enable=g-import-not-at-top
  if not distribute.holds_distributed_variables(qmodel):
    return qmodel
  values = qmodel.get_weights()
  if not distribute.is_chief():
    return None
  copy = qat.quantize(student, scheme)
  copy.set_weights(values)
  return copy


def load_model(workdir: str, name: str = "default"):
  """Rebuilds the QAT model of student ``name`` from its student and the saved weights.

  The prune-preserving quantizers take their masks from the kernels they are
  built on, so the model is rebuilt on the very student QAT started from; a
  student retrained since then is refused.
  """
  # pylint: disable=g-import-not-at-top
  from pipelines.quantize import qat
  from pipelines.train import distill
  # pylint: enable=g-import-not-at-top
  files = upstream.qat_files(workdir, name)
  student = distill.load_keras_model(files["student_model"])
  return qat.rebuild(student, files["scheme"], files["weights"], "kdprune-qat --workdir=%s" % workdir)


STAGE = Stage(kind=NAME, config_type=QatConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run, check_upstream=check_upstream)
