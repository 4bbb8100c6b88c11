"""Several replicas train as one: batch normalization over the global batch.

Under a mirrored or multi-worker strategy each replica gets a slice of the global batch. Keras'
BatchNormalization normalizes by the slice's own statistics: the update then differs from one
process' (whose statistics are the whole batch's), and a replica whose slice is empty (a last
global batch smaller than the replica count, uneven shards) fails in its first batch norm
("scale must have the same number of elements as the channels of x"). :func:`global_batch_norm`
makes every BatchNormalization of a model compute its batch statistics over the global batch
(tf_keras' ``synchronized`` mode: the replicas all-reduce each layer's sums and counts; an empty
slice adds nothing) while the model trains, and restores the layers before it is saved.
"""

import contextlib

from models.compat import keras
from pipelines.runtime import distribute


def batch_norms(model) -> list:
  """Every BatchNormalization of ``model``, nested models and wrappers (tfmot's) included."""
  found = [m for m in getattr(model, "submodules", ()) if isinstance(m, keras.layers.BatchNormalization)]
  return found + ([model] if isinstance(model, keras.layers.BatchNormalization) else [])


@contextlib.contextmanager
def global_batch_norm(model):
  """Within: ``model``'s batch norms take their statistics over the global batch when the
  strategy has more than one replica (a no-op otherwise). Traced functions keep the behaviour they
  were traced with; the layers' configuration is restored on exit, so a saved model is as
  built."""
  if distribute.strategy().num_replicas_in_sync <= 1:
    yield
    return
  layers = batch_norms(model)
  saved = [(layer, layer.synchronized, layer.fused) for layer in layers]
  for layer in layers:
    layer.synchronized = True
    layer.fused = False  # the fused kernel computes the slice's statistics itself
  try:
    yield
  finally:
    for layer, synchronized, fused in saved:
      layer.synchronized, layer.fused = synchronized, fused
