"""Dynamic pruning: masks that are revised while the student learns (RigL, Evci et al. 2020).

tfmot's magnitude pruning only ever removes weights. With
``--pruning_method=dynamic`` the student keeps tfmot's wrappers and schedule,
and the mask has one owner at any step:

* from ``--pruning_begin`` to ``--pruning_end`` tfmot owns it: its polynomial
  (or constant) schedule raises the sparsity by magnitude, exactly as with
  ``magnitude``. tfmot's schedules update masks only at steps in ``[begin,
  end]`` (``PruningSchedule._should_prune_in_step``), so after ``end`` it never
  touches them again (it still multiplies the weights by the mask every step);
* after ``--pruning_end`` (the final sparsity is reached) until
  ``mask_update_end`` the revisions own it: every ``mask_update_every`` steps
  from the schedule's end, each pruned kernel's mask is revised.

Revisions never overlap tfmot's updates because a regrown weight starts at
zero: the next magnitude update, which keeps the largest ``|w|``, would prune
it again (with both running over the same window most regrown weights were
pruned at the next update; ``tests/test_dynamic.py``). :class:`MaskRevision`
refuses a model whose schedules update masks after its first revision.

A revision:

* ``k = round(f(t) * active)`` active weights with the smallest magnitude are
  dropped, where ``f(t) = drop_fraction / 2 * (1 + cos(pi * (t - begin) /
  (end - begin)))`` decays to 0 over the revisions' window (RigL's cosine);
* ``k`` pruned weights are regrown where the magnitude of the loss gradient
  (the dense gradient: tfmot's masked kernels still receive gradients at the
  pruned positions) is largest, among all weights not active after the drop
  (so a weight that was just dropped can come straight back);
* regrown weights start at zero (they are zero in the step's forward pass
  because tfmot re-applies the mask there), so the revision does not change
  the function the student computes except through the dropped weights.

The number of active weights is unchanged by a revision, so the sparsity after
every revision is the schedule's final sparsity, and the stripped model has
the sparsity asked for. Under a distribution strategy the gradients are summed
across replicas before the revision (and the optimizer is told they are), and
the new mask is computed once and written to every replica, as tfmot's own mask
updates are.

Counters (revisions, weights regrown at the last revision and in total, per
layer) and, per kernel, which weights were regrown and are still active (so
``regrown_surviving`` counts the regrown weights alive at the end, not
revisions) are variables read by :class:`RevisionSummaries` for TensorBoard and
by the student stage for ``metrics.json``.
"""

import math
from typing import Dict, List, Optional

import numpy as np

from models.compat import keras, tf

from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # noqa: E402


def drop_fraction_at(step, begin: int, end: int, drop_fraction: float):
  """RigL's cosine decay: ``drop_fraction`` at ``begin``, 0 at ``end`` and after."""
  progress = tf.clip_by_value(
      (tf.cast(step, tf.float32) - begin) / float(max(1, end - begin)), 0.0, 1.0)
  return 0.5 * drop_fraction * (1.0 + tf.cos(math.pi * progress))


def revise_mask(weights, mask, grads, fraction):
  """One revision of one mask: returns ``(new_mask, regrown)``.

  Drops ``round(fraction * active)`` active weights with the smallest ``|weights|``
  (never more than there are pruned weights to regrow) and regrows as many of
  the weights not active after the drop with the largest ``|grads|``.
  ``regrown`` counts weights active in ``new_mask`` that were pruned in ``mask``.
  Ties go to the lower flat index (deterministic on every replica). Non-finite
  gradients (a mixed-precision step whose loss scale overflowed) count as 0.
  """
  shape = tf.shape(mask)
  m = tf.reshape(tf.cast(mask, tf.float32), [-1])
  w = tf.reshape(tf.abs(tf.cast(weights, tf.float32)), [-1])
  g = tf.reshape(tf.abs(tf.cast(grads, tf.float32)), [-1])
  g = tf.where(tf.math.is_finite(g), g, tf.zeros_like(g))  # a loss-scale overflow step
  active = tf.reduce_sum(tf.cast(m > 0, tf.int32))
  k = tf.cast(tf.round(tf.cast(fraction, tf.float32) * tf.cast(active, tf.float32)), tf.int32)
  k = tf.minimum(k, tf.size(m) - active)
  inf = tf.constant(math.inf, tf.float32)
  _, dropped = tf.math.top_k(-tf.where(m > 0, w, inf), k=k)
  after_drop = tf.tensor_scatter_nd_update(m, dropped[:, None], tf.zeros([k], tf.float32))
  _, grown = tf.math.top_k(tf.where(after_drop > 0, -inf, g), k=k)
  new = tf.tensor_scatter_nd_update(after_drop, grown[:, None], tf.ones([k], tf.float32))
  regrown = tf.reduce_sum(tf.cast((new > 0) & (m <= 0), tf.int64))
  return tf.cast(tf.reshape(new, shape), mask.dtype), regrown


def _from_wrappers(model):
  """``(pruning step, [(layer name, kernel, mask, schedule's end_step)])`` of a model with tfmot
  pruning wrappers."""
  layers = pruning_wrapper.collect_prunable_layers(model)
  if not layers:
    raise ValueError("dynamic pruning needs a model with pruning wrappers")
  return layers[0].pruning_step, [
      (layer.layer.name, weight, mask, int(getattr(layer.pruning_schedule, "end_step", -1)))
      for layer in layers for weight, mask, _ in layer.pruning_vars]


class MaskRevision(tf.Module):
  """The mask revisions of a pruned model, run by the training step (see module docstring).

  Create it under the distribution strategy's scope (it owns counter variables).

  Args:
    model: the model with tfmot pruning wrappers.
    begin_step, end_step: revisions happen at steps ``begin_step + i * every`` with
      ``begin_step < step < end_step``. ``begin_step`` must not come before the last mask
      update of any wrapper's schedule (its ``end_step``; ``mask_update_begin`` of
      ``PruningConfig.resolve_steps``): one owner of the mask at any step.
    every: steps between revisions.
    drop_fraction: ``f`` at ``begin_step``.

  Raises:
    ValueError: no pruning wrappers, or a schedule that updates masks after ``begin_step``.
  """

  def __init__(self, model, begin_step: int, end_step: int, every: int, drop_fraction: float,
               pruned=None):
    super().__init__(name="mask_revision")
    self.begin_step, self.end_step = int(begin_step), int(end_step)
    self.every, self.drop_fraction = int(every), float(drop_fraction)
    # ``pruned``: ``(pruning step, [(layer name, kernel, mask, last mask-update step)])`` of a
    # model pruned without tfmot's wrappers (the Keras 3 backend, pipelines/prune/keras3.py);
    # default: read from ``model``'s wrappers.
    self.step, pruned_kernels = pruned if pruned is not None else _from_wrappers(model)
    for name, _, _, last in pruned_kernels:
      if last < 0 or last > self.begin_step:
        raise ValueError(
            "tfmot's schedule of %s updates its mask until step %s, after the mask revisions "
            "begin (step %d): a regrown weight would be pruned again by the next magnitude "
            "update; begin the revisions at the schedule's end_step" % (
                name, "the end of training" if last < 0 else last, self.begin_step))
    # (layer name, kernel, mask) for every pruned kernel.
    self.entries = [(name, weight, mask) for name, weight, mask, _ in pruned_kernels]

    def counter(name, dtype=tf.int64):
      return tf.Variable(tf.zeros([], dtype), trainable=False, name=name,
                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    self.revisions = counter("revisions")
    self.last_step = counter("last_step")
    self.last_fraction = counter("last_fraction", tf.float32)
    self.last_regrown = [counter("last_regrown_%d" % i) for i in range(len(self.entries))]
    self.total_regrown = [counter("total_regrown_%d" % i) for i in range(len(self.entries))]
    # 1 where a weight was regrown by a revision and has stayed active since.
    self.grown = [tf.Variable(tf.zeros(mask.shape, mask.dtype), trainable=False,
                              name="grown_%d" % i,
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                  for i, (_, _, mask) in enumerate(self.entries)]

  @property
  def kernels(self) -> List:
    return [kernel for _, kernel, _ in self.entries]

  def due(self, step):
    """Whether a revision runs at ``step`` (a tensor)."""
    return tf.logical_and(
        tf.logical_and(step > self.begin_step, step < self.end_step),
        tf.equal(tf.math.floormod(step - self.begin_step, self.every), 0))

  def revise(self, grads: List):
    """Revises the masks if one is due at this step; ``grads`` match :attr:`kernels` and
    are already summed across replicas. Call in the replica context of the training step."""
    return tf.distribute.get_replica_context().merge_call(self._revise, args=(grads,))

  def _revise(self, strategy, grads):
    def local(value):  # every replica holds the same value: use the first one
      return strategy.experimental_local_results(value)[0]

    def assign(variable, value):
      return strategy.extended.update(variable, lambda v, x: v.assign(x), args=(value,))

    def update():
      step = tf.cast(local(self.step.value()), tf.int64)
      fraction = drop_fraction_at(step, self.begin_step, self.end_step, self.drop_fraction)
      ops = [assign(self.revisions, self.revisions.value() + 1), assign(self.last_step, step),
             assign(self.last_fraction, fraction)]
      for i, ((_, kernel, mask), grad) in enumerate(zip(self.entries, grads)):
        old_mask = local(mask.value())
        new_mask, regrown = revise_mask(local(kernel.value()), old_mask, local(grad), fraction)
        new_active = tf.cast(new_mask > 0, mask.dtype)
        newly = new_active * tf.cast(old_mask <= 0, mask.dtype)
        grown = tf.maximum(local(self.grown[i].value()), newly) * new_active
        ops += [assign(mask, new_mask), assign(self.last_regrown[i], regrown),
                assign(self.total_regrown[i], self.total_regrown[i].value() + regrown),
                assign(self.grown[i], grown)]
      with tf.control_dependencies(ops):
        return tf.constant(True)

    step = tf.cast(local(self.step.value()), tf.int64)
    return tf.cond(self.due(step), update, lambda: tf.constant(False))

  def surviving(self) -> Dict[str, int]:
    """Per layer: weights regrown by a revision that are active now (each counted once, however
    often it was regrown)."""
    per_layer: Dict[str, int] = {}
    for (name, _, mask), grown in zip(self.entries, self.grown):
      alive = np.sum((grown.numpy() > 0) & (mask.numpy() > 0))
      per_layer[name] = per_layer.get(name, 0) + int(alive)
    return per_layer

  def report(self) -> Dict:
    """Counters for metrics.json: revisions, weights regrown per layer and in total
    (``regrown_*``: at each revision, summed), and the regrown weights still active
    (``regrown_surviving*``)."""
    per_layer: Dict[str, int] = {}
    for (name, _, _), total in zip(self.entries, self.total_regrown):
      per_layer[name] = per_layer.get(name, 0) + int(total.numpy())
    surviving = self.surviving()
    return {"mask_revisions": int(self.revisions.numpy()),
            "regrown_total": int(sum(per_layer.values())), "regrown_per_layer": per_layer,
            "regrown_surviving": int(sum(surviving.values())),
            "regrown_surviving_per_layer": surviving}


class RevisionSummaries(keras.callbacks.Callback):
  """Writes each revision to TensorBoard (weights regrown per layer, drop fraction) at its
  step, and adds ``mask_revisions``/``regrown_total``/``regrown_surviving`` to the epoch logs.

  Place it before the callbacks that read the epoch logs. With ``steps_per_execution``
  larger than ``every``, revisions inside one execution show as the last of them plus
  the running totals (which count them all).
  """

  def __init__(self, revision: MaskRevision, log_dir: str):
    super().__init__()
    self.revision = revision
    self.log_dir = log_dir
    self.writer: Optional[tf.summary.SummaryWriter] = None
    self.seen = None

  def on_train_begin(self, logs=None):
    self.writer = tf.summary.create_file_writer(self.log_dir)
    self.seen = int(self.revision.revisions.numpy())

  def on_train_batch_end(self, batch, logs=None):
    count = int(self.revision.revisions.numpy())
    if count == self.seen:
      return
    self.seen = count
    step = int(self.revision.last_step.numpy())
    with self.writer.as_default(step=step):
      tf.summary.scalar("mask_revision/drop_fraction", self.revision.last_fraction.numpy())
      totals: Dict[str, int] = {}
      lasts: Dict[str, int] = {}
      for (name, _, _), last, total in zip(self.revision.entries, self.revision.last_regrown,
                                           self.revision.total_regrown):
        lasts[name] = lasts.get(name, 0) + int(last.numpy())
        totals[name] = totals.get(name, 0) + int(total.numpy())
      for name in lasts:
        tf.summary.scalar("mask_revision/regrown/%s" % name, lasts[name])
        tf.summary.scalar("mask_revision/regrown_total/%s" % name, totals[name])
      tf.summary.scalar("mask_revision/regrown", sum(lasts.values()))
    self.writer.flush()

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      report = self.revision.report()
      logs["mask_revisions"] = report["mask_revisions"]
      logs["regrown_total"] = report["regrown_total"]
      logs["regrown_surviving"] = report["regrown_surviving"]

  def on_train_end(self, logs=None):
    if self.writer is not None:
      self.writer.close()
