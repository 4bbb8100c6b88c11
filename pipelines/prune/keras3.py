"""Magnitude pruning of Keras 3 students, with tfmot's semantics: the second pruning backend.

tfmot wraps tf_keras layers only. A Keras 3 student keeps its own layers; what tfmot's
``PruneLowMagnitude`` wrapper adds is held beside them by a :class:`Keras3Pruning` (a
``tf.Module`` set on the model, so the epoch backups checkpoint it with the model): per pruned
kernel a non-trainable mask and threshold, and one pruning step. The training step
(:class:`pipelines.train.distill_keras3.DistillationTrainer`) calls :meth:`Keras3Pruning.
before_step` before its forward pass, which does what tfmot's wrapper does in ``call(training=
True)`` (``pruning_wrapper.py``, ``pruning_impl.py``), in the same order:

1. ``pruning_step += 1``;
2. ``conditional_mask_update``: when the schedule says so at that step (``schedule(step)[0]``: on
   the grid ``begin_step + k * frequency`` within ``[begin_step, end_step]``), every mask is
   recomputed from its kernel's magnitudes at ``schedule(step)[1]`` exactly as
   ``Pruning._update_mask`` does it (``k = max(round(size * (1 - sparsity)), 1)`` weights kept:
   those at or above the k-th largest magnitude, and the k-th itself);
3. ``weight_mask_op``: ``kernel = kernel * mask``;

then the forward pass, the gradients and the optimizer step. At each epoch's end the kernels are
masked again (tfmot's ``UpdatePruningStep.on_epoch_end``; here in the validation step, which comes
first and also sees the masked kernels, as tfmot's wrapper masks in inference). The schedules are
tfmot's own objects (:func:`pipelines.prune.magnitude.make_schedule`: plain TensorFlow functions of
the step), with the steps ``PruningConfig.resolve_steps`` resolved from the data, so a Keras 3
student is pruned on the same grid to the same sparsities as a tf_keras one. The layers pruned
and their weights are tfmot's registry's (``kernel`` of Dense and Conv, ``pointwise_kernel`` of
separable convolutions, ``embeddings``; depthwise kernels are not pruned, as in tfmot), and the
plan is :func:`pipelines.prune.plan.plan`. The report and the check are the tf_keras students'
(:func:`pipelines.prune.magnitude.sparsity_report` measures the same kernels of the stripped
model).

Under a distribution strategy (built in its scope) every variable here is mirrored without an
aggregation, as Keras 3's own are: a write in a replica's step is that replica's copy. Every
replica computes the same step, masks and masked kernels from the same mirrored kernels (the
optimizer writes the all-reduced update to every copy), so the copies agree without the
cross-replica write tfmot makes through a ``merge_call`` (Keras 3 keeps its batch norm statistics
the same way); ``tests/test_replicas_keras3.py`` finds the same masks and kernels as one
replica's, on two devices and on two workers. Mixed precision changes nothing here: masks and
kernels are float32 variables.

m:n (``--pruning_structure=m_by_n``) is tfmot's ``sparsity_m_by_n`` as kdprune runs it
(:func:`pipelines.prune.magnitude.m_by_n_from_begin`): the mask of every pruned kernel is computed
once, inside the training step whose pruning step is ``final_step`` (``--pruning_begin``), from
the kernel entering it, by tfmot's rule (:func:`m_by_n_mask`: the ``n - m`` largest magnitudes of
every ``n`` consecutive weights along the input channels, TFLite's last axis; threshold 999 as
tfmot records it), and applied at every step after. Dynamic pruning (``--pruning_method=
dynamic``) revises the masks after the schedule with :class:`pipelines.prune.dynamic.MaskRevision`
itself (:func:`revision`), run by the Keras 3 trainer from its gradients.

Not here (refused in one line before any work by the student stage): channels.
"""

from typing import Dict, List, Optional

import numpy as np

from models.compat import tf
from models.keras3 import keras3
from pipelines.config.errors import StageError
from pipelines.config.pruning import PruningConfig
from pipelines.prune import dynamic, magnitude
from pipelines.prune import plan as plan_lib

# tfmot's prune registry (``prune_registry._LAYERS_WEIGHTS_MAP``): the weights pruned per layer.
PRUNABLE = {
    "Dense": ("kernel",), "EinsumDense": ("kernel",), "Conv1D": ("kernel",),
    "Conv2D": ("kernel",), "Conv3D": ("kernel",), "Conv1DTranspose": ("kernel",),
    "Conv2DTranspose": ("kernel",), "Conv3DTranspose": ("kernel",),
    "SeparableConv1D": ("pointwise_kernel",), "SeparableConv2D": ("pointwise_kernel",),
    "Embedding": ("embeddings",),
}
STATE_ATTR = "_kdprune_pruning"


def prunable_weights(layer) -> List:
  """The weights pruned in ``layer`` (tfmot's choice for its class); [] if none."""
  return [getattr(layer, n) for n in PRUNABLE.get(type(layer).__name__, ())
          if getattr(layer, n, None) is not None]


def _input_channels(layer) -> int:
  weights = prunable_weights(layer)
  return int(weights[0].shape[-2]) if weights and len(weights[0].shape) >= 2 else 0


def plan_layers(model, config: PruningConfig) -> Dict[str, str]:
  """Layer name -> ``"prune"`` or why not (the rule of :func:`pipelines.prune.plan.plan`)."""
  layers = [(l.name, type(l).__name__, int(sum(np.prod(w.shape) for w in prunable_weights(l))),
             _input_channels(l)) for l in model.layers if l.weights]
  return plan_lib.plan(layers, config,
                       model_layers=[(l.name, type(l).__name__) for l in model.layers])


M_BY_N_THRESHOLD = 999.0  # what tfmot records as an m:n mask's threshold (it has none)


def m_by_n_mask(kernel, m_by_n):
  """tfmot's m:n mask of ``kernel`` (``Pruning._update_mask_sparsity_m_by_n``: rearranged to
  TFLite's layout, ``[C_OUT (x H x W), C_IN]``, the ``n - m`` largest magnitudes of each block of
  ``n`` consecutive weights kept, rearranged back), written with ``keras.ops``. Rank 2 (Dense,
  Embedding) or 4 (convolutions) kernels."""
  ops = keras3().ops
  zeros, n = (int(v) for v in m_by_n)
  shape = tuple(int(d) for d in kernel.shape)
  if len(shape) == 2:
    rows = ops.transpose(kernel)
  elif len(shape) == 4:
    rows = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (-1, shape[2]))
  else:
    raise ValueError("an m:n mask needs a rank 2 or 4 kernel, not shape %s" % (shape,))
  width = int(rows.shape[-1])
  padded = ops.pad(ops.abs(rows), ((0, 0), (0, -width % n)))
  blocks = ops.reshape(padded, (-1, n))
  _, keep = ops.top_k(blocks, k=n - zeros, sorted=False)
  mask = ops.reshape(ops.sum(ops.one_hot(keep, n, dtype=kernel.dtype), axis=-2),
                     (-1, width + (-width % n)))[:, :width]
  if len(shape) == 2:
    return ops.transpose(mask)
  return ops.transpose(ops.reshape(mask, (shape[3], shape[0], shape[1], shape[2])), (1, 2, 3, 0))


class Keras3Pruning(tf.Module):
  """The masks, thresholds and pruning step of a Keras 3 model's pruned kernels (module
  docstring). ``entries``: ``[(layer name, kernel, schedule)]``; ``m_by_n``: ``((m, n), step)``:
  m:n masks set once, at that pruning step (None: magnitude masks on the schedule's grid)."""

  def __init__(self, entries, m_by_n=None):
    super().__init__(name="kdprune_pruning")
    object.__setattr__(self, "_m_by_n", m_by_n)
    self.pruning_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="pruning_step")
    self.masks = [tf.Variable(tf.ones(k.shape, k.dtype), trainable=False, name=n + "_mask")
                  for n, k, _ in entries]
    self.thresholds = [tf.Variable(tf.zeros([], k.dtype), trainable=False, name=n + "_threshold")
                       for n, k, _ in entries]
    # Not tracked here: the kernels are the model's (checkpointed with it), the schedules are code.
    object.__setattr__(self, "_entries", list(entries))

  @property
  def layer_names(self) -> List[str]:
    return [n for n, _, _ in self._entries]

  def step(self) -> int:
    return int(self.pruning_step.numpy())

  def new_mask(self, kernel, sparsity):
    """``(threshold, mask)`` keeping the ``1 - sparsity`` largest magnitudes of ``kernel``:
    tfmot's ``Pruning._update_mask``, op for op."""
    ops = keras3().ops
    magnitudes = ops.abs(kernel)
    size = int(np.prod(kernel.shape))
    keep = tf.cast(tf.maximum(tf.round(tf.cast(size, tf.float32) * (1 - sparsity)), 1), tf.int32)
    values, indices = ops.top_k(ops.reshape(magnitudes, [-1]), k=size)
    threshold = ops.take(values, keep - 1)
    position = ops.take(indices, keep - 1)
    at_threshold = ops.reshape(ops.equal(ops.arange(size, dtype="int32"),
                                         ops.cast(position, "int32")), kernel.shape)
    mask = ops.logical_or(ops.greater_equal(magnitudes, threshold), at_threshold)
    return ops.cast(threshold, kernel.dtype), ops.cast(mask, kernel.dtype)

  @property
  def kernels(self) -> List:
    """The pruned kernels (Keras 3 variables), in :attr:`masks`' order."""
    return [k for _, k, _ in self._entries]

  def update_m_by_n_masks(self, step):
    """tfmot's m:n update, moved to ``--pruning_begin`` as kdprune moves tfmot's: at the one
    step :func:`pipelines.prune.magnitude.m_by_n_step`, every mask from its kernel."""
    (m_by_n, at) = self._m_by_n

    def update():
      for (_, kernel, _), mask, threshold in zip(self._entries, self.masks, self.thresholds):
        mask.assign(m_by_n_mask(kernel, m_by_n))
        threshold.assign(tf.constant(M_BY_N_THRESHOLD, threshold.dtype))
      return tf.constant(True)
    tf.cond(tf.equal(step, at), update, lambda: tf.constant(False))

  def update_masks(self, step):
    """tfmot's ``conditional_mask_update`` at ``step``: new masks where the schedule says."""
    if self._m_by_n is not None:
      self.update_m_by_n_masks(step)
      return
    for (_, kernel, schedule), mask, threshold in zip(self._entries, self.masks, self.thresholds):
      def update(kernel=kernel, schedule=schedule, mask=mask, threshold=threshold):
        new_threshold, new_mask = self.new_mask(kernel, schedule(step)[1])
        threshold.assign(new_threshold)
        mask.assign(new_mask)
        return tf.constant(True)
      tf.cond(schedule(step)[0], update, lambda: tf.constant(False))

  def apply_masks(self):
    """tfmot's ``weight_mask_op``: ``kernel = kernel * mask`` for every pruned kernel."""
    for (_, kernel, _), mask in zip(self._entries, self.masks):
      kernel.assign(kernel * mask)

  def before_step(self):
    """What tfmot's wrapper does in a training call before the layer runs (module docstring)."""
    self.pruning_step.assign_add(1)
    self.update_masks(self.pruning_step)
    self.apply_masks()

  def mask_sparsity(self) -> Dict[str, float]:
    return {n: float(1.0 - np.mean(m.numpy())) for n, m in zip(self.layer_names, self.masks)}


def state_of(model):
  """The :class:`Keras3Pruning` of a model :func:`wrap` returned (None for any other)."""
  return getattr(model, STATE_ATTR, None)


def wrap(model, config: PruningConfig, steps: dict):
  """Adds masks to the planned layers of the Keras 3 ``model`` (the model itself is returned:
  its layers stay as they are). Returns ``(model, plan)``."""
  plan = plan_layers(model, config)
  m_by_n = ((tuple(config.m_by_n), magnitude.m_by_n_step(steps))
            if config.structure == "m_by_n" else None)
  entries = []
  for layer in model.layers:
    if plan.get(layer.name) == "prune":
      schedule = magnitude.make_schedule(config, steps, config.target_for(layer.name))
      for i, kernel in enumerate(prunable_weights(layer)):
        entries.append((layer.name if i == 0 else "%s_%d" % (layer.name, i), kernel, schedule))
  setattr(model, STATE_ATTR, Keras3Pruning(entries, m_by_n))
  return model, plan


def step(model) -> int:
  state = state_of(model)
  return state.step() if state is not None else -1


def strip(model):
  """The model with its kernels masked (its layers were never wrapped)."""
  state = state_of(model)
  if state is not None:
    state.apply_masks()
  return model


class PruningSummaries:
  """Per-layer mask sparsity and threshold at each epoch's end, to TensorBoard under ``log_dir``
  (as tfmot's ``PruningSummaries``: ``<layer>/pruning/sparsity``, ``.../threshold``). A
  duck-typed callback: Keras 3's ``fit`` calls these methods on any object."""

  def __init__(self, model, log_dir: str):
    self.pruned, self.log_dir = model, log_dir
    self.model, self.params = None, {}

  def set_model(self, model):
    self.model = model

  def set_params(self, params):
    self.params = params

  def __getattr__(self, name):  # every hook this class does not define does nothing
    if name.startswith("on_"):
      return _nothing
    raise AttributeError(name)

  def on_epoch_end(self, epoch, logs=None):
    state = state_of(self.pruned)
    if state is None:
      return
    writer = tf.summary.create_file_writer(self.log_dir)
    with writer.as_default(step=state.step()):
      for name, mask, threshold in zip(state.layer_names, state.masks, state.thresholds):
        tf.summary.scalar(name + "/pruning/sparsity", 1.0 - tf.reduce_mean(mask))
        tf.summary.scalar(name + "/pruning/threshold", threshold)
    writer.close()


def _nothing(*args, **kwargs):
  del args, kwargs


_nothing._is_default = True  # Keras 3 dispatches batch hooks asynchronously when all are default


def callbacks(model, tb_dir: str) -> list:
  return [PruningSummaries(model, tb_dir + "/metrics")]


def sparsity_report(stripped, plan, m_by_n=None, targets=None) -> dict:
  """:func:`pipelines.prune.magnitude.sparsity_report` of a Keras 3 model: the same figures,
  measured on the kernels :func:`prunable_weights` names."""
  return magnitude.sparsity_report(stripped, plan, m_by_n, targets, weights_of=prunable_weights)


def m_by_n_applied_step(model, steps: dict) -> Optional[int]:
  """:func:`pipelines.prune.magnitude.m_by_n_applied_step` of a Keras 3 model: the step at
  which its m:n masks were set (every mask holds zeros once that step has run), or None."""
  state = state_of(model)
  at = magnitude.m_by_n_step(steps)
  if state is None or not state.masks or state.step() < at:
    return None
  return at if all(float(tf.reduce_min(m)) == 0.0 for m in state.masks) else None


def m_by_n_callbacks(model, steps: dict, log_dir: str) -> list:
  """``m_by_n/applied_step`` to TensorBoard, as for tf_keras students."""
  return [magnitude.MByNSummary(model, steps, log_dir, applied_step=m_by_n_applied_step)]


def revision(model, config: PruningConfig, steps: dict):
  """Dynamic pruning's :class:`pipelines.prune.dynamic.MaskRevision` over the masks of the
  Keras 3 ``model`` (:func:`wrap`): the same revisions, counters and checks as tfmot's
  students get; the Keras 3 trainer runs it from each step's gradients."""
  state = state_of(model)
  if state is None:
    raise StageError("student", "dynamic pruning needs a model with pruning masks")
  # (the TensorFlow variable of each Keras 3 kernel: what the revision reads and assigns)
  entries = [(name, kernel.value, mask, int(schedule.end_step))
             for (name, kernel, schedule), mask in zip(state._entries, state.masks)]  # pylint: disable=protected-access
  return dynamic.MaskRevision(model, steps["mask_update_begin"], steps["mask_update_end"],
                              steps["mask_update_every"], config.drop_fraction,
                              pruned=(state.pruning_step, entries))


check_sparsity = magnitude.check_sparsity
