"""Training with ``--pruning_structure=channels``: distillation while whole units go.

Training runs epoch by epoch (``fit(initial_epoch=e, epochs=e + 1)``). After
each epoch that :func:`pipelines.prune.channels.schedule` names, the least important
units of every shrinkable layer are removed, the Functional student is rebuilt
physically smaller with the surviving weights (:func:`pipelines.prune.channels.step`)
and training continues under the same distillation loss with a fresh
optimizer: the optimizer's slots (Adam's moments) belong to variables that no
longer exist, so they start at zero, while its step counter is set to the
global step so the learning-rate schedule goes on where it was.

Early stopping (``--student_patience``) and the choice of the best epoch only
consider epochs after the last rebuild, when the student has its final size
(the same idea as :class:`pipelines.callbacks.PruningAwareEarlyStopping`).

No epoch backups are written: the model changes shape between epochs, so a
killed channels run restarts the stage from epoch 0 (a rerun never resumes
into a model of the wrong size).
"""

import os
import time

from models.compat import keras, tf
from pipelines.config.errors import ConfigError
from pipelines.prune import channels
from pipelines.runtime import distribute, progress
from pipelines.train import callbacks, distill, optimizers, precision, summaries


def _trainer(student, teacher, config, steps_per_epoch: int, global_step: int):
  cfg = config.train
  trainer = distill.DistillationTrainer(
      student, teacher=teacher, temperature=config.distill.temperature,
      alpha=config.distill.alpha, distill=config.distill.enabled, task=config.data.task,
      regression_loss=config.data.regression_loss)
  trainer.compile(optimizer=optimizers.make_optimizer(cfg, steps_per_epoch),
                  steps_per_execution=cfg.steps_per_execution)
  trainer.optimizer.iterations.assign(global_step)  # the learning-rate schedule goes on
  return trainer


def check_plan(config, bundle) -> None:
  """Refuses, before the teacher's outputs are computed, a channel plan that would remove no unit
  (every shrinkable layer too small for --channel_fraction) or a student with no layer that can
  lose units: one line instead of a failure once training is due."""
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  plan = channels.schedule(config.pruning.resolve_steps(steps_per_epoch, cfg.epochs),
                           steps_per_epoch, cfg.epochs, config.pruning.channel_fraction,
                           config.pruning.exponent)
  student = distill.build_student(config, bundle)
  chains, kept = channels.analyze_model(student)
  if not chains:
    raise ConfigError("--pruning_structure=channels: no layer of the student can lose units (%s)"
                      % "; ".join("%s %s" % kv for kv in kept.items()))
  original = channels.units(student, chains)
  if not channels.effective(plan, original):
    raise ConfigError(
        "--pruning_structure=channels: --channel_fraction=%g removes no unit of the student's "
        "shrinkable layers (%s): each would keep all of its units; raise --channel_fraction or "
        "widen the student" % (config.pruning.channel_fraction, ", ".join(
            "%s %d" % kv for kv in original.items())))


def shrink_phase(config, bundle, teacher, train_ds, mode: str, tb_dir: str, jsonl: str) -> dict:
  """Trains the student for ``--student_epochs`` while removing units; restores the best epoch
  after the last rebuild. Logs go to ``tb_dir`` and ``jsonl``.

  Returns ``{"model", "chains", "kept", "original", "plan", "params_before", "best_epoch",
  "last_rebuild", "epochs_run", "stopped", "train_seconds", "optimizer"}``.
  """
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  steps = config.pruning.resolve_steps(steps_per_epoch, cfg.epochs)
  plan = channels.schedule(steps, steps_per_epoch, cfg.epochs, config.pruning.channel_fraction,
                           config.pruning.exponent)
  online = teacher if mode == "online" else None
  scope = distribute.strategy().scope

  with scope(), precision.precision(cfg.mixed_precision):
    student = distill.build_student(config, bundle)
    chains, kept = channels.analyze_model(student)
    if not chains:
      raise ConfigError("--pruning_structure=channels: no layer of the student can lose units (%s)"
                        % "; ".join("%s %s" % kv for kv in kept.items()))
    trainer = _trainer(student, online, config, steps_per_epoch, 0)
  original = channels.units(student, chains)
  plan = channels.effective(plan, original)
  last_rebuild = max(plan)
  params_before = student.count_params()
  progress.say("[%s] %s: %d parameters; removing %.2f of the units of %d layers (%s) after epochs %s; "
        "teacher outputs: %s" % (
            config.stage, config.model.name, params_before, config.pruning.channel_fraction,
            len(chains), ", ".join(chains), ", ".join("%d (%.3f)" % kv for kv in plan.items()),
            mode))
  for layer, why in kept.items():
    progress.say("[%s] %s: %s" % (config.stage, layer, why))

  fit_callbacks = [summaries.NonFiniteGuard(config.stage, "--student_learning_rate"),
               keras.callbacks.TensorBoard(log_dir=tb_dir, update_freq="epoch", profile_batch=0,
                                           write_graph=False),
               summaries.MetricsLogger(jsonl)]
  writer = tf.summary.create_file_writer(os.path.join(tb_dir, "channels"))
  higher = "acc" in cfg.monitor
  best = best_epoch = best_weights = stopped = None
  wait = epochs_run = 0
  val_ds = bundle.batches("validation", cfg.batch_size)
  start = time.time()
  for epoch in range(cfg.epochs):
    history = trainer.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
                          callbacks=fit_callbacks, verbose=callbacks.keras_verbosity(config.progress))
    epochs_run += 1
    number = epoch + 1
    if number in plan:
      with scope(), precision.precision(cfg.mixed_precision):
        student, removed = channels.step(student, original, plan[number], chains)
        trainer = _trainer(student, online, config, steps_per_epoch, number * steps_per_epoch)
      now = channels.units(student, chains)
      with writer.as_default():
        for layer, count in now.items():
          tf.summary.scalar("channels/units/" + layer, count, step=number)
        tf.summary.scalar("channels/params", student.count_params(), step=number)
      progress.say("[%s] after epoch %d: removed %s -> %d parameters" % (
          config.stage, number, ", ".join("%s %d" % kv for kv in removed.items()) or "nothing",
          student.count_params()))
      continue
    if number <= last_rebuild:
      continue
    value = history.history.get(cfg.monitor)
    if not value:
      raise ConfigError("early stopping monitors %s, which training does not log" % cfg.monitor)
    if callbacks.improved(float(value[-1]), best, higher, abs(cfg.min_delta)):
      best, best_epoch, best_weights, wait = float(value[-1]), number, student.get_weights(), 0
    else:
      wait += 1
      if cfg.patience and wait >= cfg.patience:
        stopped = number
        break
  writer.close()
  student.set_weights(best_weights)
  return {"model": student, "chains": chains, "kept": kept, "original": original, "plan": plan,
          "params_before": params_before, "best_epoch": best_epoch, "last_rebuild": last_rebuild,
          "epochs_run": epochs_run, "stopped": stopped, "train_seconds": time.time() - start,
          "optimizer": type(trainer.optimizer).__name__}


def summary(phase: dict, model, fraction: float) -> dict:
  """The ``channels`` entry of metrics.json: units per layer before/after, layers kept whole, the
  schedule, and the parameters before and after."""
  after = channels.units(model, phase["chains"])
  return {"layers": channels.describe(phase["original"], after), "kept_whole": phase["kept"],
          "schedule": {str(k): v for k, v in phase["plan"].items()}, "fraction": fraction,
          "params_before": phase["params_before"], "params_after": model.count_params(),
          "best_epoch": phase["best_epoch"], "epochs_run": phase["epochs_run"]}
