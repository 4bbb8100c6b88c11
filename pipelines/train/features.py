"""Feature hints (``--feature_distill=TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]``): an L2 loss between
an intermediate output of the student and one of the teacher (FitNets, Romero et al. 2015; the
design of Keras 3's ``keras.distillation.FeatureDistillation``, plus a learned projection, since
a small student's layers are narrower than its teacher's).

For each hint the student layer's output goes through a projection of its own, a Dense layer on
the last axis (for a ``[B, H, W, C]`` feature map, a 1x1 convolution) from the student's channels
to the teacher's, trained with the student. Spatial sizes are then matched (:func:`match`): where
the two maps differ in height and width, the larger is average-pooled down to the smaller (by an
integer factor when one divides the other, else by an antialiased bilinear resize); a feature map
against a flat ``[B, C]`` output is globally average-pooled. The loss is ``weight`` x the mean
squared difference per example (:func:`losses.feature_l2_per_example`), added to the
distillation loss and logged as ``feature_loss``.

The projections belong to the trainer, not to the student: they are never saved with it, never
reach QAT's model or the export, and are not in the epoch backups (a resumed run starts them
afresh). The teacher runs in every step (its feature maps are not cached), in inference mode.

Layer names are those of the built (unwrapped) models: a pruned or quantized layer is found by
the name of the layer it wraps. An unknown name is a one-line ConfigError listing the candidates.
"""

from typing import List, Sequence, Tuple

from models.compat import keras, tf
from pipelines.config.errors import ConfigError
from pipelines.train import losses


def _inner_name(layer) -> str:
  inner = getattr(layer, "layer", None)  # tfmot's pruning and quantize wrappers
  return inner.name if inner is not None and hasattr(inner, "name") else layer.name


def candidates(model) -> List[str]:
  """The names a hint may give for ``model`` (its layers, wrappers by the layer they wrap)."""
  return [_inner_name(l) for l in model.layers
          if not isinstance(l, keras.layers.InputLayer)]


def find_layer(model, name: str, role: str):
  """``model``'s layer called ``name`` (or wrapping a layer called so); else a one-line
  ConfigError naming it and listing the candidates."""
  for layer in model.layers:
    if layer.name == name or _inner_name(layer) == name:
      if isinstance(layer, keras.layers.InputLayer):
        break
      return layer
  raise ConfigError("--feature_distill: the %s has no layer %r; its layers: %s" % (
      role, name, ", ".join(candidates(model)) or "none"))


def check_names(model, names: Sequence[str], role: str) -> None:
  """Refuses, in one line, the first of ``names`` that ``model`` lacks."""
  if getattr(model, "kdprune_flavour", None) is not None or getattr(
      model, "kdprune_ensemble", False):
    raise ConfigError("--feature_distill needs the teacher's layers, but an imported teacher "
                      "(--teacher_path) is run as one opaque layer; distil it without hints")
  for name in names:
    find_layer(model, name, role)


def with_features(model, names: Sequence[str], role: str):
  """A Functional model on ``model``'s layers returning ``[output, *named layers' outputs]``
  (the same layers and variables: calling it once runs each layer once)."""
  outputs = [_output_in(model, find_layer(model, n, role)) for n in names]
  return keras.Model(model.inputs, [model.outputs[0], *outputs],
                     name="%s_with_features" % model.name)


def _output_in(model, layer):
  """``layer``'s output in ``model``'s graph: a layer the pruning wrapper left unwrapped is shared
  with the model it was cloned from, where its first output lives."""
  nodes = getattr(model, "_network_nodes", None)
  for i, node in enumerate(getattr(layer, "_inbound_nodes", [])):
    if nodes is not None and "%s_ib-%d" % (layer.name, i) in nodes:  # tf_keras' node key
      return node.outputs
  return layer.output


def _spatial(shape) -> Tuple[int, int]:
  return int(shape[1]), int(shape[2])


def match(student, teacher):
  """``(student, teacher)`` with equal shapes: the larger spatial map pooled to the smaller's size
  (module docstring); a ``[B, H, W, C]`` map against ``[B, C]`` globally average-pooled."""
  if student.shape.rank == 4 and teacher.shape.rank == 2:
    return tf.reduce_mean(student, axis=[1, 2]), teacher
  if student.shape.rank == 2 and teacher.shape.rank == 4:
    return student, tf.reduce_mean(teacher, axis=[1, 2])
  if student.shape.rank == 4 and _spatial(student.shape) != _spatial(teacher.shape):
    (sh, sw), (th, tw) = _spatial(student.shape), _spatial(teacher.shape)
    if sh * sw > th * tw:
      return _pool_to(student, (th, tw)), teacher
    return student, _pool_to(teacher, (sh, sw))
  return student, teacher


def _pool_to(x, size):
  h, w = _spatial(x.shape)
  if h % size[0] == 0 and w % size[1] == 0:
    k = (h // size[0], w // size[1])
    return tf.nn.avg_pool2d(x, ksize=k, strides=k, padding="VALID")
  return tf.image.resize(x, size, method="bilinear", antialias=True)


class FeatureHints:
  """The hints of one trainer: the student and teacher models with their feature outputs, and a
  projection per hint (float32 Dense layers, built now: create it inside the strategy's scope)."""

  def __init__(self, student, teacher, hints):
    self.hints = tuple(hints)
    t_names = [h[0] for h in self.hints]
    s_names = [h[1] for h in self.hints]
    check_names(teacher, t_names, "teacher")
    check_names(student, s_names, "student")
    self.student_model = with_features(student, s_names, "student")
    self.teacher_model = with_features(teacher, t_names, "teacher")
    self.weights = [float(h[2]) for h in self.hints]
    self.projections = []
    for (t_name, s_name, _), s_out, t_out in zip(self.hints, self.student_model.outputs[1:],
                                                 self.teacher_model.outputs[1:]):
      for out, name, role in ((s_out, s_name, "student"), (t_out, t_name, "teacher")):
        if out.shape.rank not in (2, 4) or any(d is None for d in out.shape[1:]):
          raise ConfigError("--feature_distill: the %s layer %r outputs %s; a hint takes a "
                            "[batch, channels] or [batch, height, width, channels] output" % (
                                role, name, tuple(out.shape)))
      projection = keras.layers.Dense(int(t_out.shape[-1]), dtype="float32",
                                      name="hint_%s_to_%s" % (s_name, t_name))
      projection.build(tuple(s_out.shape))
      self.projections.append(projection)

  @property
  def variables(self):
    return [v for p in self.projections for v in p.trainable_variables]

  def loss(self, student_features, teacher_features):
    """``[B]``: the weighted sum over the hints of each example's L2 loss."""
    total = None
    for weight, projection, s, t in zip(self.weights, self.projections, student_features,
                                        teacher_features):
      s, t = match(projection(tf.cast(s, tf.float32)), tf.cast(t, tf.float32))
      part = weight * losses.feature_l2_per_example(s, t)
      total = part if total is None else total + part
    return total
