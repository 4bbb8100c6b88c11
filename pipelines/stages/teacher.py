"""Teacher stage: train the large model the student will learn from.

Run it alone (it records itself in ``<workdir>/manifest.json`` like the
pipeline does)::

  kdprune-teacher --workdir=runs/demo                       # embedded digits, ~15 s
  kdprune-teacher --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Writes ``<workdir>/teacher/``: ``model.keras`` (best epoch by
``--teacher_monitor``), ``metrics.json``, ``config.json``, ``metrics.jsonl``
and TensorBoard logs under ``tb/``.
"""

import os
import shutil
import time

from pipelines.config import IMPORT_RECORD, LOGITS_DIR, TeacherConfig, tasks
from pipelines.config import TEACHER as NAME
from pipelines.data import sources
from pipelines.runtime import progress, rundir, timing
from pipelines.runtime.execute import Stage, StageResult

__all__ = ["NAME", "STAGE", "TeacherConfig", "validate", "fingerprint_inputs", "run"]


_CHECKED_IMPORTS = {}  # (path, mtime, data) -> True: an imported teacher is loaded once to check


def validate(config: TeacherConfig) -> None:
  """Every check that needs no training; the data source is checked last. An imported teacher
  (``--teacher_path``) is loaded here (TensorFlow) to check it fits the data."""
  config.validate()
  source = sources.resolve(config.data)
  if config.path is None:
    sources.check_augment(config.data, config.train.augment, "--teacher_augment")
    return
  key = (os.path.abspath(config.path), os.path.getmtime(config.path), source.input_shape,
         source.num_classes)
  if key not in _CHECKED_IMPORTS:
    from pipelines.train import teacher_import  # pylint: disable=g-import-not-at-top
    _, shape, units, _ = teacher_import.open_model(config.path)
    teacher_import.check_fits(config.path, shape, units, source.input_shape, source.num_classes,
                              config.data.regression)
    _CHECKED_IMPORTS[key] = True


def fingerprint_inputs(config: TeacherConfig, workdir: str = None) -> dict:
  """What decides the teacher's result: its resolved config and the data's identity (and, for an
  imported teacher, the content hash of its file: a changed file reruns the students)."""
  del workdir  # the teacher has no upstream
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity()}
  if config.path is not None:
    from pipelines.train import teacher_import  # pylint: disable=g-import-not-at-top
    inputs["teacher_file"] = teacher_import.content_hash(config.path)
  return inputs


def run(config: TeacherConfig, workdir: str) -> StageResult:
  """Trains, evaluates and saves the teacher under ``<workdir>/teacher/``."""
  # TensorFlow is imported here, not at the top: flags are checked before it loads.
  # pylint: disable=g-import-not-at-top
  from models.compat import keras
  from models.registry import build_model
  from pipelines.data import bundle as data_lib
  from pipelines.runtime import distribute
  from pipelines.train import backup, callbacks, evaluation, optimizers, precision, summaries
  # pylint: enable=g-import-not-at-top
  validate(config)
  timing.lap("startup")
  if config.path is not None:
    return _import(config, workdir)
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  bundle = data_lib.load(config.data)
  timing.lap("data")
  cfg = config.train
  steps = bundle.steps_per_epoch(cfg.batch_size)
  with distribute.strategy().scope(), precision.precision(cfg.mixed_precision):
    model = build_model(config.model, bundle.input_shape, bundle.num_classes, name="teacher",
                        flag="--teacher_model")
    model.compile(
        optimizer=optimizers.make_optimizer(cfg, steps),
        steps_per_execution=cfg.steps_per_execution, **evaluation.compile_args(config.data))
    optimizers.build_slots(model.optimizer, model.trainable_variables)
  timing.lap("build")

  # Non-chief workers of a multi-worker run write to a private directory.
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME))
  backup_dir, fp, pending = backup.locate(workdir, NAME)
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)
  # Logits the old teacher left for its students are stale now.
  shutil.rmtree(os.path.join(stage_dir, LOGITS_DIR), ignore_errors=True)

  # No schedule here: every epoch counts, and the best one is restored at the end.
  early = callbacks.PruningAwareEarlyStopping(
      model, final_step=0, monitor=cfg.monitor, patience=cfg.patience, min_delta=cfg.min_delta,
      step_fn=lambda: 0, stage=NAME)
  saver = backup.StageBackup(backup_dir, fp, model, model.optimizer, model.trainable_variables,
                             early, write_directory=distribute.output_dir(backup_dir))
  done, initial_epoch = backup.resume(saver, NAME, jsonl, cfg.epochs)
  fit_callbacks = [
      summaries.NonFiniteGuard(NAME, "--teacher_learning_rate"),
      early,
      summaries.tensorboard_callback(tb_dir),
      summaries.MetricsLogger(jsonl),
      saver,  # last: backs up the epoch after early stopping has judged it
  ]
  progress.say("[teacher] %s: %d parameters; %s: %s" % (
      config.model.name, model.count_params(), bundle.name,
      ", ".join("%s %d" % kv for kv in bundle.num_examples.items())))
  start = time.time()
  history = model.fit(
      bundle.batches("train", cfg.batch_size, shuffle=True, seed=seed,
                     augment=cfg.augment),
      validation_data=bundle.batches("validation", cfg.batch_size),
      epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=fit_callbacks,
      verbose=callbacks.keras_verbosity(config.progress))
  train_seconds = time.time() - start
  timing.lap("training")

  # Early stopping has restored the best epoch; measure what is saved.
  saved = precision.to_float32(model)  # what is measured is what is saved
  val = evaluation.evaluate(saved, bundle.batches("validation", 256), config.data)
  test = evaluation.evaluate(saved, bundle.batches("test", 256), config.data)
  timing.lap("evaluation")
  epochs_run = done + len(history.history.get("loss", []))
  metrics = {
      **tasks.split_metrics(val=val, test=test),
      "best_epoch": int(early.best_epoch) + 1,
      "epochs_run": epochs_run,
      "stopped_early": early.stopped_epoch is not None,
      "resumed_after_epoch": done or None,
      "mixed_precision": cfg.mixed_precision,
      "optimizer": type(model.optimizer).__name__,  # LossScaleOptimizer* under mixed precision
      "params": int(model.count_params()),
      "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run - done), 3),
  }

  model_path = os.path.join(stage_dir, "model.keras")
  with rundir.atomic_path(model_path) as tmp:
    saved.save(tmp)
  summaries.write_hparams(tb_dir, trial_id="%s/teacher" % os.path.basename(
      os.path.abspath(workdir)), hparams=config.resolved(),
      metrics=summaries.final_metrics(metrics, extra=("test_loss",)))
  metrics_path = os.path.join(stage_dir, "metrics.json")
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(metrics_path, {**metrics, "data": bundle.describe()})
  rundir.write_json(config_path, config.resolved())
  progress.say("[teacher] %s (best epoch %d of %d, %.1f s) -> %s" % (
      tasks.describe_result(metrics), metrics["best_epoch"], epochs_run, train_seconds,
      model_path))
  saver.discard()
  timing.lap("saving")
  return StageResult(
      artifacts={"model": model_path, "metrics": metrics_path, "config": config_path},
      metrics=metrics)


def _import(config: TeacherConfig, workdir: str) -> StageResult:
  """An imported teacher: loaded, its outputs judged (logits or probabilities), evaluated on
  validation and test like a trained one; ``import.json`` records where it is for the students."""
  # pylint: disable=g-import-not-at-top
  from pipelines.data import bundle as data_lib
  from pipelines.runtime import distribute
  from pipelines.train import evaluation, summaries, teacher_import
  # pylint: enable=g-import-not-at-top
  start = time.time()
  bundle = data_lib.load(config.data)
  sample = bundle.head("validation", 64)[0]
  timing.lap("data")
  teacher, probabilities = teacher_import.load(
      config.path, bundle.input_shape, bundle.num_classes, config.data.regression,
      config.outputs_are, sample)
  timing.lap("build")
  if probabilities:
    progress.say("[teacher] %s outputs probabilities (rows are non-negative and sum to 1): "
                 "distilling from their logarithm as logits%s" % (
                     config.path, "" if config.outputs_are == "probabilities" else
                     "; --teacher_outputs_are=logits if that is wrong"))
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME))
  tb_dir, _ = rundir.fresh_stage_logs(stage_dir)
  shutil.rmtree(os.path.join(stage_dir, LOGITS_DIR), ignore_errors=True)
  val = evaluation.evaluate(teacher, bundle.batches("validation", 256), config.data)
  test = evaluation.evaluate(teacher, bundle.batches("test", 256), config.data)
  timing.lap("evaluation")
  metrics = {
      **tasks.split_metrics(val=val, test=test),
      "imported": True, "teacher_path": os.path.abspath(config.path),
      "teacher_kind": teacher.kdprune_flavour,
      "outputs_are": "probabilities" if probabilities else (
          "predictions" if config.data.regression else "logits"),
      "train_seconds": 0.0,
  }
  record = {"path": os.path.abspath(config.path), "outputs_are": (
      "probabilities" if probabilities else "logits"),
      "sha256": teacher_import.content_hash(config.path)}
  if not config.data.regression and test["accuracy"] < 1.5 / bundle.num_classes:
    lo, hi = float(sample.min()), float(sample.max())
    progress.warn("[teacher] warning: the imported teacher's test accuracy %.4f is near chance "
                  "(%d classes); the likely cause is input scaling: kdprune feeds it inputs in "
                  "[%.3g, %.3g] (--normalization=%s); pass the --normalization it was trained "
                  "with" % (test["accuracy"], bundle.num_classes, lo, hi,
                            config.data.normalization))
  record_path = os.path.join(stage_dir, IMPORT_RECORD)
  metrics_path = os.path.join(stage_dir, "metrics.json")
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(record_path, record)
  rundir.write_json(metrics_path, {**metrics, "data": bundle.describe()})
  rundir.write_json(config_path, config.resolved())
  summaries.write_hparams(tb_dir, trial_id="%s/teacher" % os.path.basename(
      os.path.abspath(workdir)), hparams=config.resolved(),
      metrics=summaries.final_metrics(metrics, extra=("test_loss",)))
  progress.say("[teacher] imported %s (%s, %.1f s) -> %s" % (
      config.path, tasks.describe_result(metrics), time.time() - start, record_path))
  timing.lap("saving")
  return StageResult(
      artifacts={"model": record_path, "metrics": metrics_path, "config": config_path},
      metrics=metrics)


STAGE = Stage(kind=NAME, config_type=TeacherConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run)
