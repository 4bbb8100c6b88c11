"""Mixup (Zhang et al. 2018) inside the distillation step: the batch both models see.

Each training batch is mixed with a permutation of itself, ``x' = lam * x + (1 - lam) *
x[perm]``, with one weight ``lam ~ Beta(ALPHA, ALPHA)`` per batch (``--mixup=ALPHA``). The
student and the teacher (which runs in the step: cached outputs belong to unmixed inputs) see
the same ``x'``, so the soft term is the teacher's view of the mixed image; the hard term is
``lam * CE(y) + (1 - lam) * CE(y[perm])`` (:func:`losses.mixed_cross_entropy_per_example`).

Under a distribution strategy each replica mixes its own slice. The draws are stateless,
seeded by the optimizer's step, so a run repeats its mixes.
"""

from models.compat import tf


def mix(x, labels, lam, permutation):
  """``(mixed_x, labels, labels[permutation], lam)``: rows ``lam * x + (1 - lam) *
  x[permutation]`` (a convex combination of two rows of the batch)."""
  lam = tf.cast(lam, tf.float32)
  xf = tf.cast(x, tf.float32)
  mixed = lam * xf + (1.0 - lam) * tf.gather(xf, permutation)
  return tf.cast(mixed, x.dtype), labels, tf.gather(labels, permutation), lam


def draw(alpha: float, rows, step):
  """``(lam, permutation)`` for one batch of ``rows`` rows at optimizer step ``step``:
  ``lam ~ Beta(alpha, alpha)`` (as the ratio of two Gamma draws) and a random permutation."""
  seed = tf.stack([tf.constant(0x6d6978, tf.int64), tf.cast(step, tf.int64)])
  g = tf.random.stateless_gamma([2], seed=seed, alpha=float(alpha))
  lam = g[0] / tf.maximum(g[0] + g[1], 1e-12)
  keys = tf.random.stateless_uniform([rows], seed=seed + tf.constant([0, 1], tf.int64))
  return lam, tf.argsort(keys)


def mixed_batch(x, labels, alpha: float, step):
  """:func:`mix` with :func:`draw`'s weight and permutation."""
  lam, permutation = draw(alpha, tf.shape(x)[0], step)
  return mix(x, labels, lam, permutation)
