"""``cnn``: a plain VGG-style convolutional network.

``depth`` blocks of two 3x3 Conv2D -> BatchNorm -> ReLU, the filters doubling
per block from ``width``, each block followed by 2x2 max pooling while the
feature map is at least 4 pixels wide; then Flatten, Dropout and a Dense
classifier. Every layer is one tfmot and TFLite handle well (Conv+BN folds in
QAT), and the plain chain is what structured pruning can shrink.
"""

from models.compat import keras, output_dtype
from models.families import register

# Keras' default (0.99) leaves the moving statistics near their initial values
# after the few hundred steps a small dataset gives, so inference-mode accuracy
# lags far behind training accuracy; 0.9 converges in ~50 steps.
BN_MOMENTUM = 0.9


@register("cnn")
def build(input_shape, num_classes, *, width, depth, dropout, name="cnn", keras=keras):
  # ``keras``: the Keras that builds it (Keras 3 for ``--student_keras=3``; models/keras3.py).
  if len(input_shape) != 3:
    raise ValueError("cnn needs image inputs [H, W, C]; got %s (use mlp)" % (input_shape,))
  inputs = keras.Input(shape=input_shape, name="inputs")
  x = inputs
  size = min(input_shape[0], input_shape[1])
  for b in range(depth):
    filters = width * 2 ** b
    for c in range(2):
      tag = "%d_%d" % (b + 1, c + 1)
      x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name="conv_" + tag)(x)
      x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn_" + tag)(x)
      x = keras.layers.ReLU(name="relu_" + tag)(x)
    if size >= 4:
      x = keras.layers.MaxPooling2D(2, name="pool_%d" % (b + 1))(x)
      size //= 2
  x = keras.layers.Flatten(name="flatten")(x)
  if dropout:
    x = keras.layers.Dropout(dropout, name="dropout")(x)
  outputs = keras.layers.Dense(num_classes, dtype=output_dtype(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name)
