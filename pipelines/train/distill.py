"""Distillation training: the teacher it learns from, a thin trainer around a Functional student,
and the teacher-output cache.

:class:`DistillationTrainer` owns no layers of its own: ``student`` is the
(pruned) Functional model that is saved, ``teacher`` is only called in
inference mode and never trained or saved with it. The student is called
exactly once per training step, so tfmot's ``pruning_step`` advances once per
step. Batches are either ``(x, labels)`` (online: the teacher runs in the
step, or no teacher for the hard-label ablation) or ``(x, (labels,
teacher_logits))`` (cached: :func:`training_batches`; ``teacher_logits`` is ``[B, C]``, or a
``(values, classes)`` pair in the top-k form of :mod:`pipelines.train.teacher_store`). For
regression the "logits" are the teacher's predictions; the store holds them the same way.
"""

import contextlib
import json
import logging
import os
import time
from typing import Optional

import numpy as np

from models import keras3 as keras3_models
from models.compat import keras, tf
from models.registry import build_model
from models.weights import load_start_weights
from pipelines.config.errors import ConfigError
from pipelines.config.stages import IMPORT_RECORD, TEACHER
from pipelines.runtime import distribute, progress, rundir, timing, upstream
from pipelines.train import features, losses, mixup, replicas, teacher_import, teacher_store
from pipelines.train import optimizers  # also registers the schedules saved models name

# Private: _minimum_control_deps and reduce_per_replica, for the multi-step loop (_looped;
# pinned by tests/test_student.py::test_a_multi_step_execution_traces_each_step_once_...).
from tf_keras.src.engine import training as keras_training  # noqa: E402


class _OneTracePerTrainer(logging.Filter):
  """Drops TensorFlow's "N of the last M calls ... triggered tf.function retracing" warning for the
  trainers' multi-step functions (:meth:`DistillationTrainer._looped`). TensorFlow counts traces
  by the Python function's code, so every new trainer's function (one per stage and per channel
  rebuild, each traced once by design) counts as a retrace of a single function; a pipeline of
  four stages made it print. Any other function's warning is kept."""

  def filter(self, record):
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message and
                "_looped.<locals>.function" in message)


logging.getLogger("tensorflow").addFilter(_OneTracePerTrainer())


class DistillationTrainer(keras.Model):
  """Trains ``student`` on the distillation loss (or on labels alone with ``teacher=None``).

  Logged: ``loss`` (total), ``distill_loss`` (T^2 KL), ``hard_loss`` (cross-
  entropy with the labels), ``accuracy``; on validation ``loss`` is the hard
  cross-entropy, so ``val_loss`` means the same with and without distillation.
  When distilling a classifier, also ``agreement`` (the share of training examples whose top
  class is the teacher's) and ``teacher_kl`` (KL(teacher || student) at T, without the T^2).

  With ``task="regression"`` the student's outputs are predictions: the loss
  is ``alpha * loss(labels) + (1 - alpha) * loss(teacher predictions)`` with
  ``regression_loss`` (``mse`` or ``mae``; no temperature), ``hard_loss`` and
  the validation ``loss`` are that loss to the labels, and the metric
  logged in place of accuracy is the other of MSE/MAE (``mae`` or ``mse``).

  ``feature_hints`` (``((teacher_layer, student_layer, weight), ...)``): L2 losses between
  intermediate outputs through learned projections (:mod:`pipelines.train.features`; the teacher
  runs in the step), added to the total and logged as ``feature_loss``. ``mixup`` (ALPHA > 0):
  each batch is mixed with itself before both models see it (:mod:`pipelines.train.mixup`);
  the hard loss is then the two labels' cross-entropies weighted by the mix (classification).
  """

  logs_hard_loss = True  # LabelTrainer: no (its loss is the hard loss)

  def __init__(self, student, teacher=None, temperature: float = 4.0, alpha: float = 0.1,
               distill: bool = True, mask_revision=None, task: str = "classification",
               regression_loss: str = "mse", feature_hints=(), mixup: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.task = task
    self.regression_loss = regression_loss
    self.student = student
    self.teacher = teacher
    # Dynamic pruning (pipelines.dynamic.MaskRevision): revises masks from this step's gradients.
    self.mask_revision = mask_revision
    self.temperature = float(temperature)
    self.alpha = float(alpha)
    self.distill = bool(distill)
    if teacher is not None:
      teacher.trainable = False
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.distill_tracker = keras.metrics.Mean(name="distill_loss")
    self.hard_tracker = keras.metrics.Mean(name="hard_loss")
    self.accuracy = task_metric(task, regression_loss)  # the task's metric (see above)
    self.agreement_tracker = keras.metrics.Mean(name="agreement")
    self.kl_tracker = keras.metrics.Mean(name="teacher_kl")
    self.mixup = float(mixup)
    # Feature hints: their projections are the trainer's own, never the student's (not saved).
    self.hints = (features.FeatureHints(student, teacher, feature_hints)
                  if feature_hints and self.distill else None)
    if feature_hints and self.hints is None:
      raise ValueError("feature hints need a teacher run in the step (distill=True, a teacher)")
    if self.hints is not None:
      self.feature_tracker = keras.metrics.Mean(name="feature_loss")
    # Batch norm's per-replica statistics: put back on a replica that got no examples, and made
    # the replicas' mean before each evaluation (pipelines/train/replicas.py).
    self.local_state = replicas.LocalState(student)
    # The metrics above are synchronised across replicas when read, so every replica reports the
    # global value: take the first instead of Keras' multi-worker default, which sums them.
    self.distribute_reduction_method = "first"

  def compile(self, optimizer="rmsprop", **kwargs):  # pylint: disable=arguments-differ
    super().compile(optimizer=optimizer, **kwargs)
    optimizers.build_slots(self.optimizer, self._trained_variables())

  def _trained_variables(self):
    """The student's trainable variables, and the hints' projections."""
    return self.student.trainable_variables + (self.hints.variables if self.hints else [])

  # Keras' multi-step functions (steps_per_execution > 1) loop ``outputs = step(iterator)`` with
  # ``outputs`` undefined before the loop, so autograph traces the step once to learn what the
  # loop carries and once more for the loop: every train_step (and test_step) was traced twice,
  # ~20 s each on MobileNetV2 under QAT. The step's outputs here are known in advance (one
  # float scalar per metric), so the loop starts from zeros of that structure and the step is
  # traced once. The loop is a plain ``tf.while_loop`` and the function is traced without
  # AutoGraph: the student's layers (Keras' own and tfmot's wrappers) need no conversion, and
  # converting tfmot's was ~2 s per process (BUILD_NOTES.md, "Pitfall: AutoGraph converts tfmot's
  # wrappers in every process"); a teacher run in the
  # step keeps AutoGraph (``_run_teacher``), since it may be the user's own code. Everything
  # else is Keras' own function (tf_keras/src/engine/training.py).
  def make_train_function(self, force=False):
    if not self._loops_itself(self.train_function, force):
      return super().make_train_function(force)
    self.train_function = self.train_tf_function = self._looped(
        self.train_step, self._train_counter, self.metrics)
    return self.train_function

  def make_test_function(self, force=False):
    if not self._loops_itself(self.test_function, force):
      return super().make_test_function(force)
    self.test_function = self._looped(self.test_step, self._test_counter, self._test_metrics())
    return self.test_function

  def _loops_itself(self, existing, force) -> bool:
    return not ((existing is not None and not force) or self.run_eagerly or self.jit_compile
                or self._cluster_coordinator or self.autotune_steps_per_execution
                or self._steps_per_execution is None)

  def _looped(self, step_fn, counter, metrics):
    strategy = self.distribute_strategy
    steps = self._steps_per_execution

    def run_step(data):
      outputs = step_fn(data)
      with tf.control_dependencies(keras_training._minimum_control_deps(outputs)):  # pylint: disable=protected-access
        counter.assign_add(1)
      return outputs

    def one(iterator):
      outputs = strategy.run(run_step, args=(next(iterator),))
      return keras_training.reduce_per_replica(outputs, strategy,
                                               reduction=self.distribute_reduction_method)

    def function(iterator):
      def body(i, _):
        return i + 1, one(iterator)
      zeros = {m.name: tf.zeros([], m.dtype) for m in metrics}
      _, outputs = tf.while_loop(lambda i, _: i < steps, body,
                                 (tf.constant(0, steps.dtype), zeros))
      return outputs

    return tf.function(function, reduce_retracing=True, autograph=False)

  @tf.function(reduce_retracing=True)
  def _run_teacher(self, x):
    """The teacher's outputs, traced with AutoGraph (a user's layers may need it); with feature
    hints ``[logits, *feature maps]``."""
    if self.hints is not None:
      return self.hints.teacher_model(x, training=False)
    return self.teacher(x, training=False)

  def _test_metrics(self):
    """What a test step reports (a training step adds ``distill_loss`` when distilling)."""
    return [self.loss_tracker] + ([self.hard_tracker] if self.logs_hard_loss else []) + [
        self.accuracy]

  @property
  def metrics(self):
    agreement = [self.agreement_tracker, self.kl_tracker] if self._agreement_logged() else []
    hints = [self.feature_tracker] if self.hints is not None else []
    return self._test_metrics() + ([self.distill_tracker] if self.distill else []) + hints + \
        agreement

  def _agreement_logged(self) -> bool:
    return self.distill and self.task != "regression"

  def call(self, x, training=False):
    return self.student(x, training=training)

  def compute_losses(self, x, labels, teacher_logits, student_logits, mixed=None):
    """The loss parts of each example of one batch (``[B]`` each; the teacher is run here when
    its logits are not given). ``mixed``: ``(labels_b, lam)`` of a mixup batch: the hard loss is
    ``lam * CE(labels) + (1 - lam) * CE(labels_b)``."""
    if not self.distill:
      hard = self.hard_loss(labels, student_logits)
      if mixed is not None:
        hard = losses.mixed_cross_entropy_per_example(labels, mixed[0], mixed[1], student_logits)
      return {"total": hard, "hard": hard}
    if teacher_logits is None:
      teacher_logits = tf.stop_gradient(self._run_teacher(x))
      if self.hints is not None:
        teacher_logits = teacher_logits[0]
    if self.task == "regression":
      return losses.regression_distillation_loss(student_logits, teacher_logits, labels,
                                                 self.alpha, self.regression_loss,
                                                 per_example=True)
    parts = losses.distillation_loss(student_logits, teacher_logits, labels,
                                     self.temperature, self.alpha, per_example=True)
    if mixed is not None:
      hard = losses.mixed_cross_entropy_per_example(labels, mixed[0], mixed[1], student_logits)
      parts = {"hard": hard, "distill": parts["distill"],
               "total": (1.0 - self.alpha) * parts["distill"] + self.alpha * hard}
    return parts

  def hard_loss(self, labels, outputs):
    """The loss to the labels of each example: cross-entropy, or the regression loss."""
    if self.task == "regression":
      return losses.regression_error_per_example(labels, outputs, self.regression_loss)
    return losses.hard_cross_entropy_per_example(labels, outputs)

  def train_step(self, data):
    x, y = data
    labels, teacher_logits = (y if isinstance(y, (tuple, list)) else (y, None))
    # A replica without examples steps on one row weighted 0 (pipelines/train/replicas.py).
    (x, labels, teacher_logits), weights, empty = replicas.at_least_one_row(
        (x, labels, teacher_logits))
    mixed = None
    if self.mixup > 0:  # the batch both models see (pipelines/train/mixup.py)
      if teacher_logits is not None:
        raise ValueError("mixup needs the teacher in the step: cached outputs belong to "
                         "unmixed inputs")
      x, labels, labels_b, lam = mixup.mixed_batch(x, labels, self.mixup,
                                                   self.optimizer.iterations)
      mixed = (labels_b, lam)
    restore_local_state = self.local_state.kept_unless(empty)
    with tf.GradientTape() as tape:
      if self.hints is not None:
        student_logits, *student_features = self.hints.student_model(x, training=True)
        teacher_logits, *teacher_features = tf.nest.map_structure(
            tf.stop_gradient, self._run_teacher(x))
      else:
        student_logits = self.student(x, training=True)
        if self.distill and teacher_logits is None:  # online: the teacher runs in the step
          teacher_logits = tf.stop_gradient(self._run_teacher(x))
      parts = self.compute_losses(x, labels, teacher_logits, student_logits, mixed=mixed)
      if self.hints is not None:
        parts["feature"] = self.hints.loss(student_features, teacher_features)
        parts["total"] = parts["total"] + parts["feature"]
      # The optimizer sums the replicas' gradients: each replica's loss is the sum of its
      # examples' losses over the number of examples in the whole global batch, so the sum is the
      # gradient of the global batch's mean, however the batch was split (a replica may get
      # fewer examples than another, or none: its mean would be NaN).
      total = global_batch_mean(parts["total"], weights)
      if self.student.losses:  # the model's own penalties, once per global batch
        total = total + tf.add_n([tf.cast(l, tf.float32) for l in self.student.losses]) / (
            tf.distribute.get_strategy().num_replicas_in_sync)
      scaled = total
      if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
        scaled = self.optimizer.get_scaled_loss(total)  # mixed precision: float16 gradients
    restore_local_state()
    variables = self._trained_variables()
    grads = tape.gradient(scaled, variables)
    if scaled is not total:
      grads = self.optimizer.get_unscaled_gradients(grads)
    if self.mask_revision is None:
      self.optimizer.apply_gradients(zip(grads, variables))
    else:
      self._revise_and_apply(grads, variables)
    # Per example: the logged means weigh every example once (a short last batch does not
    # weigh as much as a full one), as evaluate() does.
    self.loss_tracker.update_state(parts["total"], sample_weight=weights)
    if self.logs_hard_loss:
      self.hard_tracker.update_state(parts["hard"], sample_weight=weights)
    if self.distill:
      self.distill_tracker.update_state(parts["distill"], sample_weight=weights)
    if self.hints is not None:
      self.feature_tracker.update_state(parts["feature"], sample_weight=weights)
    if self._agreement_logged():
      # The teacher's top class: the first of its top-k classes, or the argmax of its logits.
      top = (teacher_logits[1][:, 0] if isinstance(teacher_logits, (tuple, list))
             else tf.argmax(teacher_logits, axis=-1))
      self.agreement_tracker.update_state(tf.cast(tf.equal(
          tf.cast(top, tf.int64), tf.argmax(student_logits, axis=-1)), tf.float32),
          sample_weight=weights)
      self.kl_tracker.update_state(parts["distill"] / (self.temperature ** 2),
                                   sample_weight=weights)
    self.accuracy.update_state(labels, student_logits, sample_weight=weights)
    return {m.name: m.result() for m in self.metrics}

  def _revise_and_apply(self, grads, variables):
    """Revises the masks from the gradients summed over replicas, then applies them (the
    optimizer is told they are summed already, so each all-reduce happens once)."""
    context = tf.distribute.get_replica_context()
    summed = context.num_replicas_in_sync > 1
    if summed:
      grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    by_variable = {v.ref(): g for v, g in zip(variables, grads)}
    self.mask_revision.revise([by_variable[k.ref()] for k in self.mask_revision.kernels])
    if summed:
      self.optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)
    else:
      self.optimizer.apply_gradients(zip(grads, variables))

  def test_step(self, data):
    x, y = data
    labels = y[0] if isinstance(y, (tuple, list)) else y
    (x, labels), weights, _ = replicas.at_least_one_row((x, labels))
    student_logits = self.student(x, training=False)
    hard = self.hard_loss(labels, student_logits)
    self.loss_tracker.update_state(hard, sample_weight=weights)
    if self.logs_hard_loss:
      self.hard_tracker.update_state(hard, sample_weight=weights)
    self.accuracy.update_state(labels, student_logits, sample_weight=weights)
    return {m.name: m.result() for m in self._test_metrics()}

  def evaluate(self, *args, **kwargs):  # pylint: disable=signature-differs
    """Keras' evaluate (also fit's validation), with every replica's batch norm statistics
    first made their mean: what is saved and what ``evaluation.evaluate`` measures."""
    self.local_state.sync()
    return super().evaluate(*args, **kwargs)


class LabelTrainer(DistillationTrainer):
  """Trains ``model`` on the labels of ``data_config``'s task alone (the teacher stage), logging
  what a compiled Keras model's ``fit`` did: ``loss`` and the task's metric (``accuracy``, or
  ``mae``/``mse``), and their ``val_`` forms.

  Unlike Keras' compiled loss (a mean per replica, over the replica count), its loss is one
  per-example mean over the global batch, and a replica that gets no examples steps on a row that
  counts for nothing (:mod:`pipelines.train.replicas`).
  """

  logs_hard_loss = False

  def __init__(self, model, data_config, **kwargs):
    super().__init__(model, teacher=None, distill=False, task=data_config.task,
                     regression_loss=data_config.regression_loss, **kwargs)


def trainer_options(distill_config) -> dict:
  """The :class:`DistillationTrainer` arguments of ``--feature_distill`` and ``--mixup`` (what a
  stage passes beside the loss's own: ``**trainer_options(config.distill)``)."""
  return {"feature_hints": tuple(distill_config.feature_distill) if distill_config.enabled
          else (), "mixup": distill_config.mixup}


def agreement_metrics(history) -> dict:
  """``{"agreement", "teacher_kl"}`` of the last epoch a ``fit`` ran (its History, or the
  ``{key: per-epoch values}`` of :class:`pipelines.train.loop.Trained`) (the student against its
  teacher on that epoch's training batches), or ``{}`` when they were not logged."""
  logs = getattr(history, "history", history) or {}
  return {k: round(float(logs[k][-1]), 6) for k in ("agreement", "teacher_kl") if logs.get(k)}


def global_batch_mean(per_example, weights=None):
  """In a replica's step: the sum of this replica's ``per_example`` values over the number of
  examples of the global batch (all replicas'); summed over the replicas, the global batch's mean.
  A replica without examples contributes 0 (``tf.nn.compute_average_loss`` with the counted
  global batch: its default, per-replica size x replicas, is wrong for a split last batch).
  ``weights`` (0 or 1 per row, :func:`replicas.at_least_one_row`): the rows that are examples;
  None: every row."""
  if weights is None:
    count = tf.shape(per_example)[0]
  else:
    count = tf.cast(tf.reduce_sum(weights), tf.int32)
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    count = tf.cast(context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(count, tf.float32)),
                    tf.int32)
  return tf.nn.compute_average_loss(per_example, sample_weight=weights, global_batch_size=count)


def task_metric(task: str, regression_loss: str = "mse", keras_module=keras):
  """The metric logged beside the loss: accuracy, or for regression the error the loss is not
  (from ``keras_module``: tf_keras, or Keras 3 for a Keras 3 student's trainer)."""
  metrics = keras_module.metrics
  if task == "regression":
    if regression_loss == "mse":
      return metrics.MeanAbsoluteError(name="mae")
    return metrics.MeanSquaredError(name="mse")
  return metrics.SparseCategoricalAccuracy(name="accuracy")


def teacher_logits(teacher, bundle, batch_size: int) -> np.ndarray:
  """The teacher's outputs (logits, or predictions for regression) for every training example,
  in ``bundle.train``'s order."""
  ds = bundle.batches("train", batch_size)
  logits = teacher.predict(ds.map(lambda x, y: x), verbose=0)
  if len(logits) != bundle.num_examples["train"]:
    raise RuntimeError("teacher produced %d logits for %d training examples" % (
        len(logits), bundle.num_examples["train"]))
  return logits.astype(np.float32)


def with_teacher_logits(bundle, logits: np.ndarray, batch_size: int, seed: int):
  """Training batches ``(x, (labels, teacher_logits))``, reshuffled each epoch.

  The logits travel with their examples through the shuffle (see the
  ``extras`` of :meth:`DatasetBundle.batches`).
  """
  return bundle.batches("train", batch_size, shuffle=True, seed=seed, extras=logits)


def training_batches(bundle, teacher, distill_config, train_config, seed: int,
                     cache_path: Optional[str] = None):
  """The training batches of a distillation stage, and how the teacher's outputs reach them.

  Returns ``(dataset, mode, cache_seconds)``: ``mode`` is ``cached`` (the
  teacher's logits travel with the batches), ``online`` (the trainer runs the
  teacher in each step) or ``none``. Cached logits live in a store on disk at
  ``cache_path`` (:mod:`pipelines.train.teacher_store`: float16, sharded, top-k
  with ``--teacher_topk``), written by the first stage that needs them (each
  worker its own shard) and streamed from there with their examples through the
  shuffle, so memory does not grow with the data; the student's store serves QAT.
  Without a ``cache_path`` the logits are computed into memory (:func:`teacher_logits`).
  """
  if not distill_config.enabled:
    mode = "none"
  else:
    mode = distill_config.resolved_teacher_outputs(train_config.augment != "none")
  start = time.time()
  if mode != "cached":
    ds = bundle.batches("train", train_config.batch_size, shuffle=True, seed=seed,
                        augment=train_config.augment)
    return ds, mode, time.time() - start
  if not cache_path:
    logits = teacher_logits(teacher, bundle, max(train_config.batch_size, 256))
    return with_teacher_logits(bundle, logits, train_config.batch_size, seed), mode, \
        time.time() - start
  topk = teacher_store.topk_for(getattr(distill_config, "teacher_topk", 0), bundle.num_classes)
  store = teacher_store.open_or_write(
      teacher_store.store_path(cache_path, topk, distill_config.temperature), teacher, bundle,
      max(train_config.batch_size, 256), topk, distill_config.temperature)
  ds = bundle.batches("train", train_config.batch_size, shuffle=True, seed=seed,
                      extras=store.dataset())
  return ds, mode, time.time() - start


def teacher_and_batches(config, workdir: str, bundle, seed: int):
  """What a distilling stage (the student, QAT) trains on: its teacher (None without
  distillation) and its training batches, through the run directory's store of teacher outputs.

  Returns ``(teacher, dataset, mode, cache_seconds)`` (see :func:`training_batches`)."""
  teacher = teacher_for_training(workdir, bundle, config.data, config.distill, config.train)
  hints = getattr(config.distill, "feature_distill", ())
  if teacher is not None and hints:  # before any work: a bad name is refused in one line
    features.check_names(teacher, [h[0] for h in hints], "teacher")
  timing.lap("build")
  cache_path = upstream.teacher_logits_path(workdir, config.data) if teacher is not None else None
  if cache_path and getattr(teacher, "kdprune_ensemble", False):  # its logits depend on T
    cache_path += "-T%g" % config.distill.temperature
  dataset, mode, cache_seconds = training_batches(
      bundle, teacher, config.distill, config.train, seed, cache_path=cache_path)
  timing.lap("teacher_outputs")
  return teacher, dataset, mode, cache_seconds


# ----------------------------------------------------------------------------
# The teacher a distillation stage learns from.


def load_keras_model(path: str):
  """A model kdprune saved (teacher or stripped student), as a tf_keras model (not compiled).

  Importing this module registers kdprune's learning-rate schedules, which a saved
  model's optimizer config may name. A Keras 3 student (``--student_keras=3``, ``--student_path``)
  comes back as the Keras 3 model it is.
  """
  if keras3_models.is_keras3_file(path):  # Keras 3 students
    return keras3_models.keras3().models.load_model(path, compile=False)
  return keras.models.load_model(path, compile=False)


def load_teacher(workdir: str, bundle, dataset: str, temperature: float = 1.0):
  """The finished teacher of ``workdir`` (trained, or imported with ``--teacher_path``), checked
  against the data it will guide the student on.

  Several imported teachers come as one model averaging them at ``temperature``
  (:func:`teacher_import.ensemble`: its softmax at T is their mean probability at T)."""
  entry = upstream.teacher_entry(workdir)
  path = os.path.join(workdir, entry.get("artifacts", {}).get("model",
                                                             os.path.join(TEACHER, "model.keras")))
  if os.path.basename(path) == IMPORT_RECORD:
    with open(path) as f:
      record = json.load(f)
    models = []
    for one in record.get("teachers") or [record]:
      if not os.path.exists(one["path"]) or rundir.content_hash(one["path"]) != one["sha256"]:
        raise ConfigError("the imported teacher %s is missing or changed since kdprune-teacher "
                          "imported it; rerun kdprune-teacher --workdir=%s" % (one["path"],
                                                                                workdir))
      teacher, _ = teacher_import.load(one["path"], bundle.input_shape, bundle.num_classes,
                                       bundle.task == "regression", one["outputs_are"],
                                       allow_unsafe=record.get("allow_unsafe", False))
      models.append(teacher)
    if len(models) == 1:
      return models[0]
    return teacher_import.ensemble(models, bundle.input_shape, temperature,
                                   bundle.task == "regression")
  return load_teacher_checked(load_keras_model(path), bundle, "the teacher in %s" % path,
                              "--dataset=%s" % dataset, "retrain the teacher on this data")


def load_teacher_checked(teacher, bundle, what: str, data: str = "the data",
                         hint: str = "pass a teacher trained on this data"):
  """``teacher`` if its input and output fit ``bundle``, else a one-line ConfigError."""
  if tuple(teacher.input_shape[1:]) != bundle.input_shape or \
      tuple(teacher.output_shape[1:]) != (bundle.num_classes,):
    raise ConfigError("%s takes %s and predicts %s classes, but %s gives %s and %d classes; %s" % (
        what, tuple(teacher.input_shape[1:]), teacher.output_shape[-1], data, bundle.input_shape,
        bundle.num_classes, hint))
  return teacher


def teacher_for_training(workdir: str, bundle, data, distill_config, train_config):
  """The teacher a distillation stage needs (None without distillation).

  A teacher that runs in the training step (online outputs) is built under the
  distribution strategy; one that only fills the cache runs locally on each worker.
  """
  if not distill_config.enabled:
    return None
  online = distill_config.resolved_teacher_outputs(train_config.augment != "none") == "online"
  with (distribute.strategy().scope() if online else contextlib.nullcontext()):
    return load_teacher(workdir, bundle, data.dataset, distill_config.temperature)


def build_student(config, bundle):
  """The built ``config.model`` (a StudentConfig's), started from ``config.weights``
  (``--student_weights``) when given; a file that does not fit is a ConfigError."""
  student = build_model(config.model, bundle.input_shape, bundle.num_classes, name="student",
                        flag="--student_model")
  if config.weights is not None:
    load_start_weights(student, config.weights, "--student_weights", config.allow_unsafe)
    progress.say("[%s] started from the weights of %s" % (config.stage, config.weights))
  return student
