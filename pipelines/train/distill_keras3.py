"""Distillation of a Keras 3 student: the trainer and optimizer of :mod:`pipelines.train.distill`
for Keras 3 models (on the TensorFlow backend).

:class:`DistillationTrainer` is a ``keras.Model`` (Keras 3) with its own ``train_step`` and
``test_step``: the same losses (:mod:`pipelines.train.losses`, pure TensorFlow), the same batches
(``(x, labels)`` online or without a teacher, ``(x, (labels, teacher_logits))`` cached, top-k
included), the same logged names (``loss``, ``distill_loss``, ``hard_loss``, ``accuracy`` or the
regression metric, ``agreement``, ``teacher_kl``; on validation ``loss`` is the hard loss), and the
same per-example means over the global batch under every strategy (a replica left without
examples by a short last batch steps on a row weighted 0, :mod:`pipelines.train.replicas`), with
Keras 3's loss scaling under ``--mixed_precision``. The teacher is any teacher kdprune runs (a tf_keras
model, or an imported one wrapped in tf_keras): it is called as a TensorFlow function, never
trained. A pruned student (:mod:`pipelines.prune.keras3`) has its masks advanced before each
forward pass and applied before each validation, as tfmot's wrappers do; with dynamic pruning its
:class:`pipelines.prune.dynamic.MaskRevision` revises them from each step's gradients before the
optimizer applies them (as the tf_keras trainer does). ``mixup`` (ALPHA > 0) mixes each batch
before both models see it (:mod:`pipelines.train.mixup`), as in the tf_keras trainer.

:func:`make_optimizer` gives the Keras 3 optimizer the flags name, driven by the very schedule
tf_keras students get (:func:`pipelines.train.optimizers.make_schedule`).
"""

from models.compat import tf
from models.keras3 import keras3
from pipelines.prune import keras3 as prune_keras3
from pipelines.train import distill as distill_lib
from pipelines.train import losses, mixup, optimizers, replicas

_CLASS = None


def DistillationTrainer(student, teacher=None, temperature: float = 4.0, alpha: float = 0.1,  # noqa: N802
                        distill: bool = True, task: str = "classification",
                        regression_loss: str = "mse", mask_revision=None, mixup: float = 0.0):
  """The Keras 3 trainer around ``student`` (its class is made on first use: Keras 3 is imported
  only for Keras 3 students)."""
  global _CLASS
  if _CLASS is None:
    _CLASS = _make_class()
  trainer = _CLASS(student, teacher=teacher, temperature=temperature, alpha=alpha,
                   distill=distill, task=task, regression_loss=regression_loss)
  trainer.set_revision_and_mixup(mask_revision, mixup)
  return trainer


def _make_class():
  k = keras3()

  class Trainer(k.Model):
    """:class:`pipelines.train.distill.DistillationTrainer` for a Keras 3 student."""

    _revision = None  # set_revision_and_mixup
    mixup = 0.0

    def __init__(self, student, teacher=None, temperature=4.0, alpha=0.1, distill=True,
                 task="classification", regression_loss="mse"):
      super().__init__()
      self.student = student
      self.task, self.regression_loss = task, regression_loss
      self.temperature, self.alpha, self.distill = float(temperature), float(alpha), bool(distill)
      # Not tracked: the teacher is never trained or saved with the student.
      object.__setattr__(self, "_teacher", teacher)
      if teacher is not None:
        teacher.trainable = False
      object.__setattr__(self, "_pruning", prune_keras3.state_of(student))
      # Batch norm's per-replica statistics: put back on a replica that got no examples, and made
      # the replicas' mean before each evaluation (pipelines/train/replicas.py).
      object.__setattr__(self, "local_state", replicas.LocalState(student))
      self.loss_tracker = k.metrics.Mean(name="loss")
      self.distill_tracker = k.metrics.Mean(name="distill_loss")
      self.hard_tracker = k.metrics.Mean(name="hard_loss")
      self.accuracy = distill_lib.task_metric(task, regression_loss, keras_module=k)
      self.agreement_tracker = k.metrics.Mean(name="agreement")
      self.kl_tracker = k.metrics.Mean(name="teacher_kl")

    @property
    def teacher(self):
      return self._teacher

    def set_revision_and_mixup(self, mask_revision=None, mixup: float = 0.0):
      """Dynamic pruning's revisions (over this student's masks) and ``--mixup``'s ALPHA."""
      # Not tracked by the trainer: the loop's backups keep the revision (Phase.extra).
      object.__setattr__(self, "_revision", mask_revision)
      self.mixup = float(mixup)

    def _mix(self, x, labels, teacher_logits):
      """``(x, labels, mixed)``: the batch both models see; ``mixed`` is ``(labels_b, lam)`` of
      a mixup batch (None without ``--mixup``)."""
      if not self.mixup > 0:
        return x, labels, None
      if teacher_logits is not None:
        raise ValueError("mixup needs the teacher in the step: cached outputs belong to "
                         "unmixed inputs")
      x, labels, labels_b, lam = mixup.mixed_batch(
          x, labels, self.mixup, tf.convert_to_tensor(self.optimizer.iterations))
      return x, labels, (labels_b, lam)

    def _mixed_parts(self, parts, labels, mixed, student_logits):
      """The tf_keras trainer's mixup loss: the hard loss is ``lam * CE(labels) + (1 - lam) *
      CE(labels_b)``."""
      if mixed is None:
        return parts
      hard = losses.mixed_cross_entropy_per_example(labels, mixed[0], mixed[1], student_logits)
      if not self.distill:
        return {"total": hard, "hard": hard}
      return {"hard": hard, "distill": parts["distill"],
              "total": (1.0 - self.alpha) * parts["distill"] + self.alpha * hard}

    def _apply(self, grads, variables):
      """The optimizer step, after dynamic pruning's revision (from these gradients) if due."""
      if self._revision is not None:
        by_variable = {id(v): g for v, g in zip(variables, grads)}
        kernel_grads = [by_variable[id(k)] for k in self._pruning.kernels]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
          # The revision ranks the gradients summed over replicas, as the tf_keras trainer's
          # (each replica's alone would differ); the optimizer still gets each replica's own.
          kernel_grads = context.all_reduce(tf.distribute.ReduceOp.SUM, kernel_grads)
        self._revision.revise(kernel_grads)
      self.optimizer.apply_gradients(zip(grads, variables))

    def _test_metrics(self):
      return [self.loss_tracker, self.hard_tracker, self.accuracy]

    @property
    def metrics(self):
      if getattr(self, "_evaluating", False):
        return self._test_metrics()
      agreement = [self.agreement_tracker, self.kl_tracker] if (
          self.distill and self.task != "regression") else []
      return self._test_metrics() + ([self.distill_tracker] if self.distill else []) + agreement

    def call(self, x, training=False):
      return self.student(x, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
      """Keras 3 builds what is unbuilt from a first batch, which it takes and reduces across
      the replicas first, even when nothing is unbuilt (under MultiWorkerMirroredStrategy that
      reduce fails: "Attempt to convert a value (PerReplica...) to a Tensor"). The student is
      built, the optimizer too (:func:`compile_trainer`) and nothing else is compiled: the
      trainer is built as it is."""
      if self.student.built and self.optimizer is not None and self.optimizer.built:
        self.built = True
        return
      super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def hard_loss(self, labels, outputs):
      if self.task == "regression":
        return losses.regression_error_per_example(labels, outputs, self.regression_loss)
      return losses.hard_cross_entropy_per_example(labels, outputs)

    def _loss_parts(self, labels, teacher_logits, student_logits):
      if not self.distill:
        hard = self.hard_loss(labels, student_logits)
        return {"total": hard, "hard": hard}
      if self.task == "regression":
        return losses.regression_distillation_loss(student_logits, teacher_logits, labels,
                                                   self.alpha, self.regression_loss,
                                                   per_example=True)
      return losses.distillation_loss(student_logits, teacher_logits, labels, self.temperature,
                                      self.alpha, per_example=True)

    def train_step(self, data):
      x, y = data
      labels, teacher_logits = (y if isinstance(y, (tuple, list)) else (y, None))
      # A replica without examples steps on one row weighted 0 (pipelines/train/replicas.py).
      (x, labels, teacher_logits), weights, empty = replicas.at_least_one_row(
          (x, labels, teacher_logits))
      if self._pruning is not None:
        self._pruning.before_step()  # tfmot's wrapper: step, mask update on the grid, mask
      x, labels, mixed = self._mix(x, labels, teacher_logits)
      if self.distill and teacher_logits is None:  # online: the teacher runs in the step
        teacher_logits = tf.stop_gradient(self._teacher(x, training=False))
      restore_local_state = self.local_state.kept_unless(empty)
      variables = self.student.trainable_variables
      with tf.GradientTape() as tape:
        student_logits = tf.cast(self.student(x, training=True), tf.float32)
        parts = self._mixed_parts(self._loss_parts(labels, teacher_logits, student_logits),
                                  labels, mixed, student_logits)
        # Each replica: its examples' sum over the global batch's count (the optimizer sums the
        # replicas' gradients), as the tf_keras trainer; not Keras 3's mean per replica.
        total = distill_lib.global_batch_mean(parts["total"], weights)
        if self.student.losses:  # the model's own penalties, once per global batch
          total = total + tf.add_n([tf.cast(l, tf.float32) for l in self.student.losses]) / (
              replicas.replicas_in_sync())
        scaled = self.optimizer.scale_loss(total)  # mixed precision: the loss scale (else 1)
      restore_local_state()
      grads = tape.gradient(scaled, variables)
      self._apply(_agreed_finite(self.optimizer, grads), variables)
      self.loss_tracker.update_state(parts["total"], sample_weight=weights)
      self.hard_tracker.update_state(parts["hard"], sample_weight=weights)
      if self.distill:
        self.distill_tracker.update_state(parts["distill"], sample_weight=weights)
      if self.distill and self.task != "regression":
        self.agreement_tracker.update_state(
            losses.top_class_agreement_per_example(teacher_logits, student_logits),
            sample_weight=weights)
        self.kl_tracker.update_state(parts["distill"] / (self.temperature ** 2),
                                     sample_weight=weights)
      self.accuracy.update_state(labels, student_logits, sample_weight=weights)
      return _step_logs(self.metrics)

    def test_step(self, data):
      x, y = data
      labels = y[0] if isinstance(y, (tuple, list)) else y
      (x, labels), weights, _ = replicas.at_least_one_row((x, labels))
      if self._pruning is not None:
        self._pruning.apply_masks()  # tfmot masks in inference (and again at the epoch's end)
      student_logits = tf.cast(self.student(x, training=False), tf.float32)
      hard = self.hard_loss(labels, student_logits)
      self.loss_tracker.update_state(hard, sample_weight=weights)
      self.hard_tracker.update_state(hard, sample_weight=weights)
      self.accuracy.update_state(labels, student_logits, sample_weight=weights)
      return _step_logs(self._test_metrics())

    def evaluate(self, *args, **kwargs):  # pylint: disable=signature-differs
      """Keras 3's evaluate (also fit's validation), with two differences under a strategy:
      every replica's batch norm statistics are first made their mean (what is saved and what
      ``evaluation.evaluate`` measures); and the logs are the metrics read across replicas.

      Keras 3 logs the metrics read across replicas only when a step's logs name exactly
      ``metrics``; otherwise the last step's, each replica's own means averaged: a replica that
      got fewer examples weighed as much as one with more (or with none, its 0). The validation
      step logs :meth:`_test_metrics`, so ``metrics`` is that list while evaluating."""
      with self.distribute_strategy.scope():  # Keras 3's fit runs outside the strategy's scope
        self.local_state.sync()
      object.__setattr__(self, "_evaluating", True)
      try:
        return super().evaluate(*args, **kwargs)
      finally:
        object.__setattr__(self, "_evaluating", False)

  return Trainer


def _step_logs(metrics) -> dict:
  """A step's logs: each metric's result; of shape ``[1]`` across workers.

  Keras 3 reduces a step's logs across workers (``MultiWorkerMirroredStrategy``) with
  ``strategy.reduce("MEAN", value, axis=0)``, which fails on a scalar ("Invalid reduction
  dimension 0 for input with 0 dimensions"); a ``[1]`` value reduces to the scalar. (The epoch's
  logs are the metrics read across replicas, scalars.) Keras' own test for that reduction."""
  logs = {m.name: m.result() for m in metrics}
  extended = tf.distribute.get_strategy().extended
  if getattr(extended, "_in_multi_worker_mode", lambda: False)():
    logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
  return logs


def _agreed_finite(optimizer, grads):
  """``grads``, made non-finite on every replica where any replica's are (mixed precision under a
  strategy; otherwise ``grads`` as they are).

  Keras 3's ``LossScaleOptimizer`` checks each replica's own gradients before their all-reduce and
  skips the step, halving the scale, where they are not finite: a replica whose float16 gradients
  overflowed would skip the step (and the all-reduce inside it) while the others applied theirs.
  The replicas agree on one answer first (one more all-reduce of a scalar per step), as tf_keras'
  loss scale optimizer does after its all-reduce."""
  k = keras3()
  context = tf.distribute.get_replica_context()
  if (not isinstance(optimizer, k.optimizers.LossScaleOptimizer) or context is None
      or context.num_replicas_in_sync == 1):
    return grads
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
  overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
  spoil = tf.where(overflowed > 0, float("nan"), 0.0)
  return [g if g is None else g + tf.cast(spoil, g.dtype) for g in grads]


def compile_trainer(trainer, train_config, steps_per_epoch: int) -> None:
  """Compiles ``trainer`` with the flags' optimizer; its slots built now (as tf_keras students')."""
  trainer.compile(optimizer=make_optimizer(train_config, steps_per_epoch),
                  steps_per_execution=steps_per_execution(trainer, train_config),
                  jit_compile=False)
  trainer.optimizer.build(trainer.student.trainable_variables)


def steps_per_execution(trainer, train_config) -> int:
  """``--steps_per_execution``, or 1 under a strategy of more than one replica: Keras 3.15's
  multi-step loop (a ``while_loop`` around a ``cond`` on the next batch, around
  ``strategy.run``) fails there on its first call, for any model ("You must feed a value for
  placeholder tensor 'while/cond/Placeholder'"; a plain ``Sequential`` with
  ``steps_per_execution=4`` under ``MirroredStrategy`` too). One step per call trains the same."""
  if trainer.distribute_strategy.num_replicas_in_sync > 1:
    return 1
  return train_config.steps_per_execution


def make_optimizer(config, steps_per_epoch: int):
  """The Keras 3 optimizer ``config`` names, on :func:`optimizers.make_schedule`'s schedule."""
  k = keras3()
  schedule = optimizers.make_schedule(config, steps_per_epoch)

  class Schedule(k.optimizers.schedules.LearningRateSchedule):
    """The tf_keras schedule, called on the Keras 3 optimizer's step."""

    def __call__(self, step):
      return schedule(step)

    def get_config(self):
      return {}

  return optimizers.make_optimizer(config, steps_per_epoch, keras_module=k, lr=Schedule())
