"""The teacher stage's work (TensorFlow imported here, at the top); its checks are in
:mod:`pipelines.stages.teacher`."""

import os
import shutil
import time

from models.registry import build_model
from pipelines.config import IMPORT_RECORD, LOGITS_DIR, TeacherConfig, tasks
from pipelines.config import TEACHER as NAME
from pipelines.data import bundle as data_lib
from pipelines.data.base import own_test_split
from pipelines.runtime import distribute, progress, rundir, timing
from pipelines.runtime.execute import StageResult
from pipelines.stages.teacher import validate
from pipelines.train import (distill, evaluation, loop, optimizers, precision, summaries,
                             teacher_import)


def run(config: TeacherConfig, workdir: str) -> StageResult:
  """Trains, evaluates and saves the teacher under ``<workdir>/teacher/``."""
  validate(config)
  if config.path is not None:
    timing.lap("startup")
    return _import(config, workdir)
  seed, bundle = loop.start(config)
  cfg = config.train
  with distribute.strategy().scope(), precision.precision(cfg.mixed_precision):
    model = build_model(config.model, bundle.input_shape, bundle.num_classes, name="teacher",
                        flag="--teacher_model")
    # Trains on the labels with the student's trainer (losses over the global batch, replicas
    # without examples): logs what compile + fit did (pipelines/train/distill.py).
    trainer = distill.LabelTrainer(model, config.data)
    trainer.compile(
        optimizer=optimizers.make_optimizer(cfg, bundle.steps_per_epoch(cfg.batch_size)),
        steps_per_execution=cfg.steps_per_execution)
  timing.lap("build")
  # Logits the old teacher left for its students are stale now.
  shutil.rmtree(os.path.join(distribute.output_dir(os.path.join(workdir, NAME)), LOGITS_DIR),
                ignore_errors=True)
  progress.say("[teacher] %s: %d parameters; %s: %s" % (
      config.model.name, model.count_params(), bundle.name,
      ", ".join("%s %d" % kv for kv in bundle.num_examples.items())))
  # No schedule here: every epoch counts, and the best one is restored at the end.
  trained = loop.train(
      config, workdir, loop.Phase(model=model, trainer=trainer),
      bundle.batches("train", cfg.batch_size, shuffle=True, seed=seed, augment=cfg.augment),
      bundle.batches("validation", cfg.batch_size), "--teacher_learning_rate")

  saved = precision.to_float32(model)  # what is measured is what is saved
  metrics = {**loop.evaluate_splits(saved, bundle, config.data), **trained.metrics(cfg),
             "params": int(model.count_params())}
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME))
  artifacts = loop.write_outputs(config, workdir, stage_dir, trained.tb_dir, metrics,
                                 {"data": bundle.describe()}, lambda: loop.save_keras(saved, stage_dir),
                                 final_extra=("test_loss",))
  progress.say("[teacher] %s (best epoch %d of %d, %.1f s) -> %s" % (
      tasks.describe_result(metrics), metrics["best_epoch"], trained.epochs_run,
      trained.train_seconds, artifacts["model"]))
  trained.saver.discard()
  timing.lap("saving")
  return StageResult(artifacts=artifacts, metrics=metrics)


def _import(config: TeacherConfig, workdir: str) -> StageResult:
  """An imported teacher: loaded, its outputs judged (logits or probabilities), evaluated on
  validation and test like a trained one; ``import.json`` records where it is for the students."""
  start = time.time()
  bundle = data_lib.load(config.data)
  sample = bundle.head("validation", 64)[0]
  timing.lap("data")
  loaded = []  # (path, model, probabilities) of each imported teacher
  for path in config.paths:
    model, probabilities = teacher_import.load(
        path, bundle.input_shape, bundle.num_classes, config.data.regression,
        config.outputs_are, sample, allow_unsafe=config.allow_unsafe)
    loaded.append((path, model, probabilities))
    if probabilities:
      progress.say("[teacher] %s outputs probabilities (rows are non-negative and sum to 1): "
                   "distilling from their logarithm as logits%s" % (
                       path, "" if config.outputs_are == "probabilities" else
                       "; --teacher_outputs_are=logits if that is wrong"))
  timing.lap("build")
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME))
  tb_dir, _ = rundir.fresh_stage_logs(stage_dir)
  shutil.rmtree(os.path.join(stage_dir, LOGITS_DIR), ignore_errors=True)

  def outputs_are(probabilities):
    return "probabilities" if probabilities else (
        "predictions" if config.data.regression else "logits")

  teachers = []  # several: each one's own record and figures, then the average's
  for path, model, probabilities in loaded if len(loaded) > 1 else ():
    one_test = evaluation.evaluate(model, bundle.batches("test", 256), config.data)
    teachers.append({"path": os.path.abspath(path), "outputs_are": outputs_are(probabilities),
                     "sha256": rundir.content_hash(path),
                     **{"test_" + k: v for k, v in one_test.items()}})
  # Several teachers are measured as their average at T = 1 (the students average at their T).
  teacher = loaded[0][1] if len(loaded) == 1 else teacher_import.ensemble(
      [m for _, m, _ in loaded], bundle.input_shape, 1.0, config.data.regression)
  probabilities = loaded[0][2]
  val = evaluation.evaluate(teacher, bundle.batches("validation", 256), config.data)
  test = evaluation.evaluate(teacher, bundle.batches("test", 256), config.data)
  timing.lap("evaluation")
  metrics = {
      **tasks.split_metrics(val=val, test=test),
      "imported": True, "teacher_path": os.path.abspath(config.path),
      "teacher_kind": teacher.kdprune_flavour,
      "outputs_are": outputs_are(probabilities),
      "train_seconds": 0.0,
      # A test split kdprune carved itself may hold examples the teacher was trained on
      # elsewhere: the export's verdict says so (pipelines.export.report.verdict).
      "test_source": bundle.test_source,
  }
  record = {"path": os.path.abspath(config.path), "outputs_are": (
      "probabilities" if probabilities else "logits"),
      "sha256": rundir.content_hash(config.path),
      # The user trusted this file at import: the students load it the same way.
      "allow_unsafe": config.allow_unsafe}
  if teachers:
    metrics["teachers"] = teachers
    record["teachers"] = [{"path": t["path"], "sha256": t["sha256"], "outputs_are": (
        "probabilities" if t["outputs_are"] == "probabilities" else "logits")} for t in teachers]
  if not config.data.regression and test["accuracy"] < 1.5 / bundle.num_classes:
    lo, hi = float(sample.min()), float(sample.max())
    progress.warn("[teacher] warning: the imported teacher's test accuracy %.4f is near chance "
                  "(%d classes); the likely cause is input scaling: kdprune feeds it inputs in "
                  "[%.3g, %.3g] (--normalization=%s); pass the --normalization it was trained "
                  "with" % (test["accuracy"], bundle.num_classes, lo, hi,
                            config.data.normalization))
  if bundle.test_source:
    progress.warn("[teacher] warning: the test split was %s: if the imported teacher was trained "
                  "on any of those examples, its test figures are inflated; give the data its "
                  "own test split (%s)" % (bundle.test_source, own_test_split(config.data.dataset)))
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
