"""``lenet`` and ``tinycnn``: LeNet-style convolutional networks.

``depth`` blocks of one 3x3 Conv2D -> BatchNorm -> ReLU -> 2x2 max pooling (while the feature
map is at least 4 pixels wide), the filters doubling per block from ``width``; then Flatten and,
for ``lenet``, a hidden Dense of ``8 * width`` units with ReLU and Dropout, and a Dense
classifier.

Against ``cnn`` (two convolutions per block, the first block at full resolution) ``lenet`` costs
a fraction of the multiply-adds per image and holds most of its weights in the hidden Dense, the
shape of the tfmot tutorials' MNIST models: a cheap teacher to train, and one whose float file
is large beside a pruned int8 student.

``tinycnn`` is the same stack without the hidden Dense (Flatten, Dropout, the classifier): the
fewest layers that still see the whole image, for students that must fit a few kilobytes (each
layer also costs the file its op, tensors and per-channel scales). Width 8, depth 3 on MNIST:
72 + 1,152 + 4,608 convolution weights and a 288 x 10 classifier (launch/presets/mnist_5kb.cfg).
"""

from models.compat import keras, output_dtype
from models.families import register
from models.spec import LENET_HIDDEN_PER_WIDTH

BN_MOMENTUM = 0.9  # as models/cnn.py: moving statistics settle within the few hundred steps


def _build(input_shape, num_classes, *, width, depth, dropout, name, keras, hidden):
  if len(input_shape) != 3:
    raise ValueError("%s needs image inputs [H, W, C]; got %s (use mlp)" % (
        "lenet" if hidden else "tinycnn", input_shape))
  inputs = keras.Input(shape=input_shape, name="inputs")
  x = inputs
  size = min(input_shape[0], input_shape[1])
  for b in range(depth):
    tag = "%d" % (b + 1)
    x = keras.layers.Conv2D(int(width) * 2 ** b, 3, padding="same", use_bias=False,
                            name="conv_" + tag)(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn_" + tag)(x)
    x = keras.layers.ReLU(name="relu_" + tag)(x)
    if size >= 4:
      x = keras.layers.MaxPooling2D(2, name="pool_" + tag)(x)
      size //= 2
  x = keras.layers.Flatten(name="flatten")(x)
  if hidden:
    x = keras.layers.Dense(LENET_HIDDEN_PER_WIDTH * int(width), name="dense")(x)
    x = keras.layers.ReLU(name="relu_dense")(x)
  if dropout:
    x = keras.layers.Dropout(dropout, name="dropout")(x)
  outputs = keras.layers.Dense(num_classes, dtype=output_dtype(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name)


@register("lenet")
def build(input_shape, num_classes, *, width, depth, dropout, name="lenet", keras=keras):
  # ``keras``: the Keras that builds it (Keras 3 for ``--student_keras=3``; models/keras3.py).
  return _build(input_shape, num_classes, width=width, depth=depth, dropout=dropout, name=name,
                keras=keras, hidden=True)


@register("tinycnn")
def build_tiny(input_shape, num_classes, *, width, depth, dropout, name="tinycnn", keras=keras):
  # ``keras``: as for lenet.
  return _build(input_shape, num_classes, width=width, depth=depth, dropout=dropout, name=name,
                keras=keras, hidden=False)
