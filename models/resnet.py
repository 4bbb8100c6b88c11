"""``resnet``: a small pre-activation-free ResNet (He et al. 2016) for a strong teacher.

A 3x3 stem of ``width`` filters, then three stages of ``depth`` basic residual
blocks (two 3x3 Conv-BN, identity or 1x1-projection shortcut, ReLU after the
add); stages 2 and 3 double the filters and halve the resolution while the
feature map is at least 4 pixels wide. Global average pooling and a Dense
classifier finish it. ``depth=1`` gives a ResNet-8, ``depth=3`` a ResNet-20.
"""

from models.compat import keras, output_dtype
from models.families import register

# Keras' default (0.99) leaves the moving statistics near their initial values
# after the few hundred steps a small dataset gives, so inference-mode accuracy
# lags far behind training accuracy; 0.9 converges in ~50 steps.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters, stride, name, relu=True, keras=keras):
  x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=name + "_conv")(x)
  x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_bn")(x)
  if relu:
    x = keras.layers.ReLU(name=name + "_relu")(x)
  return x


def _block(x, filters, stride, name, keras=keras):
  shortcut = x
  y = _conv_bn(x, filters, stride, name + "_a", keras=keras)
  y = _conv_bn(y, filters, 1, name + "_b", relu=False, keras=keras)
  if stride != 1 or shortcut.shape[-1] != filters:
    shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                   kernel_initializer="he_normal", name=name + "_proj")(shortcut)
    shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_proj_bn")(shortcut)
  y = keras.layers.Add(name=name + "_add")([shortcut, y])
  return keras.layers.ReLU(name=name + "_out")(y)


@register("resnet")
def build(input_shape, num_classes, *, width, depth, dropout, name="resnet", keras=keras):
  # ``keras``: the Keras that builds it (Keras 3 for ``--student_keras=3``; models/keras3.py).
  if len(input_shape) != 3:
    raise ValueError("resnet needs image inputs [H, W, C]; got %s (use mlp)" % (input_shape,))
  inputs = keras.Input(shape=input_shape, name="inputs")
  x = _conv_bn(inputs, width, 1, "stem", keras=keras)
  size = min(input_shape[0], input_shape[1])
  for s in range(3):
    filters = width * 2 ** s
    for b in range(depth):
      stride = 2 if (s > 0 and b == 0 and size >= 4) else 1
      if stride == 2:
        size = -(-size // 2)
      x = _block(x, filters, stride, "stage%d_block%d" % (s + 1, b + 1), keras=keras)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  if dropout:
    x = keras.layers.Dropout(dropout, name="dropout")(x)
  outputs = keras.layers.Dense(num_classes, dtype=output_dtype(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name)
