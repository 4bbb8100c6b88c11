"""Replicas whose slice of a global batch is empty, and batch norm's per-replica statistics.

Under a distribution strategy a replica can get no examples in a step: a last global batch too
small to give every replica a row (``tf.distribute`` splits a batch into per-replica slices in
order, so a 1-example last batch leaves every replica but the first empty), or a worker whose
own files ran out first (``tf.distribute`` then hands it an empty placeholder batch). Such a
batch cannot go through the model: on CPU, oneDNN's ``Conv2D`` returns an empty input's own
shape instead of the convolution's (the next batch norm then fails: "scale must have the same
number of elements as the channels of x, got 32 and 1"), and batch statistics of no rows are
NaN. Nor can that replica skip the forward pass: the step's collectives (tfmot's mask updates
are ``merge_call``s inside it; the gradients' all-reduce after it) need every replica.

So an empty replica steps on one row of zeros with weight 0 (:func:`at_least_one_row`): its
losses, gradients and metrics count nothing, and its replica-local state (a batch norm's moving
statistics, kept per replica and averaged when read) is put back after the step
(:class:`LocalState`), as tf_keras' ``BatchNormalization`` itself skips the update for an empty
batch under a strategy. Mirrored state that the forward pass updates with a cross-replica mean
(the QAT activation ranges, an exponential average at decay 0.999) takes that row's range in with
weight ``0.001 / replicas``, once per such step.

A replica normalises by its own moving statistics in inference mode, and those differ between
replicas (each averages the statistics of its own slices); what is saved and what
:func:`pipelines.train.evaluation.evaluate` measures is their mean. :meth:`LocalState.sync`
(before each evaluation in ``fit``) sets every replica's copy to that mean, so the logged
``val_loss`` is the saved model's. Over steps where every replica has examples that changes
nothing saved (the mean of exponential averages is the exponential average of the means); a step
that a replica sits out moves the mean by the other replicas' updates alone, which then depend on
their own copies, so there the synced and unsynced runs part slightly.

A Keras 3 model's batch norm statistics are not ``ON_READ``: they are mirrored variables without
an aggregation, which each replica assigns on its own (Keras 3 leaves them to diverge, and saves
the first replica's). They are its replica-local state here: put back alike, and made the
replicas' mean by :meth:`LocalState.sync` with an explicit all-reduce.

With one replica nothing here adds an op.
"""

from models import keras3 as keras3_models
from models.compat import tf


def replicas_in_sync() -> int:
  """The number of replicas of the current strategy (1 without one)."""
  return tf.distribute.get_strategy().num_replicas_in_sync


def at_least_one_row(batch):
  """In a replica's step: ``(batch, weights, empty)``.

  ``batch`` (a nest of tensors with the examples on the first axis, or None) unchanged, or one row of
  zeros in each tensor where this replica got no examples; ``weights`` ``[rows]`` float32 (1 for
  each example, 0 for that row); ``empty`` a scalar bool. With one replica:
  ``(batch, None, None)``, nothing added.
  """
  if replicas_in_sync() == 1:
    return batch, None, None
  flat = tf.nest.flatten(batch)
  rows = tf.shape(next(t for t in flat if t is not None))[0]
  empty = tf.equal(rows, 0)

  def one_row(tensor):
    if tensor is None:
      return None
    shape = tensor.shape[1:]
    shape = ([1] + shape.as_list() if shape.is_fully_defined()
             else tf.concat([[1], tf.shape(tensor)[1:]], axis=0))
    return tf.cond(empty, lambda: tf.zeros(shape, tensor.dtype), lambda: tensor)

  batch = tf.nest.pack_sequence_as(batch, [one_row(t) for t in flat])
  weights = tf.cast(tf.range(tf.maximum(rows, 1)) < rows, tf.float32)
  return batch, weights, empty


class LocalState:
  """``model``'s replica-local variables (``ON_READ``: batch norm's moving statistics), read at
  first use (a model not built yet has none to read)."""

  def __init__(self, model):
    self.model = model
    self._variables = None
    self._sync = None

  @property
  def variables(self):
    if self._variables is None:
      self._variables = [v for v in self.model.non_trainable_variables if _replica_local(v)]
    return self._variables

  def kept_unless(self, empty):
    """In a replica's step, before the forward pass: returns a function to call after it, which
    puts this replica's copies back as they were where ``empty`` (see
    :func:`at_least_one_row`; None: nothing kept)."""
    if empty is None or not self.variables:
      return lambda: None
    saved = [_local_value(v) for v in self.variables]

    def restore():
      def put_back():
        return tf.group([v.assign(s) for v, s in zip(self.variables, saved)])
      tf.cond(empty, put_back, tf.no_op)
    return restore

  def sync(self) -> None:
    """Outside the step (every worker at once: it is collective): every replica's copy of each
    variable set to the replicas' mean, the value read and saved."""
    if replicas_in_sync() == 1 or not self.variables:
      return
    if self._sync is None:
      def sync():
        for v in self.variables:
          v.assign(v.read_value())  # read: the mean over replicas; assigned: to each replica

      def sync_keras3():  # each replica assigns its own copy the all-reduced mean
        def replica():
          context = tf.distribute.get_replica_context()
          means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                     [_local_value(v) for v in self.variables])
          return tf.group([v.assign(m) for v, m in zip(self.variables, means)])
        tf.distribute.get_strategy().run(replica)
      self._sync = tf.function(sync_keras3 if keras3_models.is_keras3(self.model) else sync,
                               autograph=False)
    with tf.distribute.get_strategy().scope():
      self._sync()


def _replica_local(variable) -> bool:
  """Whether each replica keeps its own value of ``variable``: ``ON_READ`` (tf_keras' batch norm
  statistics), or a Keras 3 model's float non-trainable variable (module docstring)."""
  if keras3_models.is_keras3(variable):
    return tf.as_dtype(variable.dtype).is_floating
  return variable.synchronization == tf.VariableSynchronization.ON_READ


def _local_value(variable):
  """In a replica's step: this replica's value of ``variable``."""
  return tf.identity(variable.value if keras3_models.is_keras3(variable)
                     else variable.read_value())
