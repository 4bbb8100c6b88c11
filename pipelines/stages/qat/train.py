"""The qat stage's work (TensorFlow imported here, at the top); its checks are in
:mod:`pipelines.stages.qat`."""

import os

from models import keras3 as keras3_models
from pipelines.config import QatConfig, tasks
from pipelines.config.errors import ConfigError
from pipelines.export import tflite
from pipelines.prune import backend as prune_backend
from pipelines.quantize import backend as quantize_backend
from pipelines.runtime import distribute, progress, rundir, timing, upstream
from pipelines.runtime.execute import StageResult
from pipelines.stages.qat import validate
from pipelines.train import distill, loop, optimizers


def run(config: QatConfig, workdir: str) -> StageResult:
  """Fine-tunes the student with QAT; saves the weights under ``<workdir>/qat/<name>/``."""
  validate(config)
  seed, bundle = loop.start(config)
  upstream_student = upstream.student_record(workdir, config.name)
  student_path = upstream_student.model_path
  plan, target = upstream_student.plan, upstream_student.target_sparsity
  m_by_n = upstream_student.m_by_n
  student = distill.load_keras_model(student_path)
  if tuple(student.input_shape[1:]) != bundle.input_shape or \
      tuple(student.output_shape[1:]) != (bundle.num_classes,):
    raise ConfigError("the student in %s takes %s and predicts %s classes, but --dataset=%s "
                      "gives %s and %d classes" % (
                          student_path, tuple(student.input_shape[1:]), student.output_shape[-1],
                          config.data.dataset, bundle.input_shape, bundle.num_classes))
  if keras3_models.is_keras3(student):  # tfmot cannot quantize it: int8 after training
    return _post_training(config, workdir, bundle, student, upstream_student)
  cfg = config.train
  teacher, train_ds, mode, cache_seconds = distill.teacher_and_batches(config, workdir, bundle,
                                                                       seed)
  qat = quantize_backend.for_model(student)
  pruning = prune_backend.for_model(student)
  masks = qat.zero_masks(student, upstream_student.pruned_layers)
  with distribute.strategy().scope():
    qmodel = qat.quantize(student, config.scheme)
    trainer = distill.DistillationTrainer(
        qmodel, teacher=teacher if mode == "online" else None,
        temperature=config.distill.temperature, alpha=config.distill.alpha,
        distill=config.distill.enabled, task=config.data.task,
        regression_loss=config.data.regression_loss,
        **distill.trainer_options(config.distill))  # --feature_distill, --mixup
    trainer.compile(optimizer=optimizers.make_optimizer(cfg, bundle.steps_per_epoch(
        cfg.batch_size)), steps_per_execution=cfg.steps_per_execution)
  timing.lap("build")
  progress.say("[%s] %s QAT of %s (%d parameters, sparsity %.3f); teacher outputs: %s" % (
      config.stage, config.scheme, student_path, student.count_params(),
      upstream_student.sparsity, mode))
  # No schedule here: every epoch counts, and the best one is restored at the end.
  trained = loop.train(config, workdir, loop.Phase(model=qmodel, trainer=trainer), train_ds,
                       bundle.batches("validation", cfg.batch_size), "--qat_learning_rate")

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
  headline = "test_" + tasks.headline(config.data.task)[0]
  metrics = {
      **loop.evaluate_splits(qmodel, bundle, config.data),
      "student_" + headline: float(upstream_student.metrics[headline]),
      "sparsity": report["sparsity"], "target_sparsity": target,
      "student_sparsity": upstream_student.sparsity,
      "params": report["params"], "nonzero_params": report["nonzero_params"],
      "remasked_weights": int(sum(drifted.values())),
      "max_drift": max_drift,
      "scheme": config.scheme, "teacher_outputs": mode,
      **distill.agreement_metrics(trained.history), **trained.metrics(cfg),
      "teacher_cache_seconds": round(cache_seconds, 2),
      "student_finished": upstream_student.finished,
  }
  stage_dir = distribute.output_dir(rundir.RunDir(workdir).stage_dir(config.stage))

  def save():
    weights_path = os.path.join(stage_dir, "model.weights.h5")
    with rundir.atomic_path(weights_path) as tmp:
      qmodel.save_weights(tmp)
    # The serving SavedModel the export converts: it need not rebuild the QAT model with tfmot
    # (9.6 s of a MobileNetV2 export's 22.6 s; BUILD_NOTES.md, "Decision: the QAT stage writes the
    # serving SavedModel").
    serving_path = os.path.join(stage_dir, "saved_model")
    serving_model = _serving_copy(qmodel, student, config.scheme)
    if serving_model is not None:
      with rundir.atomic_path(serving_path) as tmp:
        tflite.save_serving(serving_model, tmp, autograph=False)
    return {"model": weights_path, "saved_model": serving_path}

  artifacts = loop.write_outputs(
      config, workdir, stage_dir, trained.tb_dir, metrics,
      {"remasked": drifted, "layers": report["layers"],
       "sparsity_before_remask": {n: e["sparsity"] for n, e in before.items()},
       "drift": {n: e["drift"] for n, e in before.items()}, "data": bundle.describe()},
      save, final={"final/sparsity": metrics["sparsity"],
                   "final/remasked_weights": float(metrics["remasked_weights"])},
      check=lambda: pruning.check_sparsity(report, target, config.stage, m_by_n, cause=(
          "QAT moved weights the student had pruned (%d re-zeroed) and the sparsity still fell; "
          "try --qat_scheme=prune_preserve" % metrics["remasked_weights"])))
  progress.say("[%s] %s (student %.5g) at sparsity %.4f; %d drifted weights re-zeroed "
               "(%.1f s) -> %s" % (config.stage, tasks.describe_result(metrics),
                                   metrics["student_" + headline], metrics["sparsity"],
                                   metrics["remasked_weights"], trained.train_seconds,
                                   artifacts["model"]))
  trained.saver.discard()
  timing.lap("saving")
  return StageResult(artifacts=artifacts, metrics=metrics)


def _post_training(config: QatConfig, workdir: str, bundle, student, upstream_student
                   ) -> StageResult:
  """The QAT stage of a Keras 3 student, which tfmot cannot quantize: no fine-tuning; the export
  quantizes the pruned float student to full int8 after training (``scheme: "ptq"`` in
  ``metrics.json``; calibrated on ``--representative_examples`` training examples). The stage
  measures the student, checks its sparsity and writes what the export converts (the serving
  SavedModel) and a copy of the student (``model.keras``)."""
  timing.lap("build")
  progress.say("[%s] the student is a Keras 3 model, which tfmot cannot quantize: no QAT; the "
               "export quantizes it to int8 after training (full-integer post-training "
               "quantization, ptq)" % config.stage)
  stage_dir = distribute.output_dir(rundir.RunDir(workdir).stage_dir(config.stage))
  tb_dir, _ = rundir.fresh_stage_logs(stage_dir)
  pruning = prune_backend.for_model(student)
  report = pruning.sparsity_report(student, upstream_student.plan, upstream_student.m_by_n,
                                   targets=upstream_student.layer_targets())
  headline = "test_" + tasks.headline(config.data.task)[0]
  metrics = {
      **loop.evaluate_splits(student, bundle, config.data),
      "student_" + headline: float(upstream_student.metrics[headline]),
      "sparsity": report["sparsity"], "target_sparsity": upstream_student.target_sparsity,
      "student_sparsity": upstream_student.sparsity,
      "params": report["params"], "nonzero_params": report["nonzero_params"],
      "remasked_weights": 0, "max_drift": 0.0, "scheme": "ptq",
      "quantization": "full-integer post-training quantization by the export (no QAT: tfmot "
                      "cannot quantize a Keras 3 model)",
      "teacher_outputs": "none", "epochs_run": 0, "train_seconds": 0.0,
      "student_finished": upstream_student.finished,
  }

  def save():
    model_path = os.path.join(stage_dir, "model.keras")
    with rundir.atomic_path(model_path) as tmp:
      student.save(tmp)
    serving_path = os.path.join(stage_dir, "saved_model")
    with rundir.atomic_path(serving_path) as tmp:
      tflite.save_serving(student, tmp, autograph=False)
    return {"model": model_path, "saved_model": serving_path}

  artifacts = loop.write_outputs(
      config, workdir, stage_dir, tb_dir, metrics,
      {"layers": report["layers"], "data": bundle.describe()}, save,
      final={"final/sparsity": metrics["sparsity"]},
      check=lambda: pruning.check_sparsity(report, upstream_student.target_sparsity,
                                           config.stage, upstream_student.m_by_n))
  progress.say("[%s] %s (float, before int8) at sparsity %.4f -> %s" % (
      config.stage, tasks.describe_result(metrics), metrics["sparsity"],
      artifacts["saved_model"]))
  timing.lap("saving")
  return StageResult(artifacts=artifacts, metrics=metrics)


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
  if not distribute.holds_distributed_variables(qmodel):
    return qmodel
  values = qmodel.get_weights()
  if not distribute.is_chief():
    return None
  copy = quantize_backend.for_model(student).quantize(student, scheme)
  copy.set_weights(values)
  return copy


def load_model(workdir: str, name: str = "default"):
  """Rebuilds the QAT model of student ``name`` from its student and the saved weights.

  The prune-preserving quantizers take their masks from the kernels they are
  built on, so the model is rebuilt on the very student QAT started from; a
  student retrained since then is refused.
  """
  files = upstream.qat_files(workdir, name)
  student = distill.load_keras_model(files["student_model"])
  return quantize_backend.for_model(student).rebuild(
      student, files["scheme"], files["weights"], "kdprune-qat --workdir=%s" % workdir)
