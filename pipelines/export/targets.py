"""The runtimes an export targets (``--target``): one record per target with its file, its
conversion, its op list and I/O rules, and the checks that read them from the flatbuffer.

No TensorFlow here: the checks read :func:`pipelines.export.tflite.inspect_model`'s description
of a converted file, and :func:`refusal_before_work` reads the config alone (the export stage's
``validate``), so a student a target can never take is refused before any work.

* ``litert``: the product, ``student_qat_int8.tflite`` (int8 weights and activations, float32
  inputs and outputs unless ``--int8_io``), measured by the LiteRT interpreter; its checks are
  the export stage's own (integer-only, the pruned zeros kept).
* ``edgetpu``: int8 inputs and outputs (uint8 with ``--int8_io=uint8``), every op integer and in
  the Edge TPU compiler's supported operations (coral.ai, "TensorFlow models on the Edge TPU",
  "Supported operations"), no fused activation where that table forbids one, static shapes (the
  batch fixed at 1), no tensor with more than 3 dimensions above 1. The Edge TPU compiler
  (``edgetpu_compiler``) is a Debian package of Google's own repository that cannot be installed
  here: the file is the compiler's input, checked against the documented rules, not compiled.
* ``tflm``: int8 inputs and outputs, static shapes, every op in TensorFlow Lite Micro's op
  resolver (``MicroMutableOpResolver``'s builtins, tensorflow/lite/micro/
  micro_mutable_op_resolver.h, the list ``tflite_micro``'s Python interpreter registers), and the
  file run in TFLM's own interpreter (:mod:`pipelines.export.tflm`): its accuracy beside
  LiteRT's, the smallest tensor arena it runs in and the flash it needs (the file's bytes).
* ``xnnpack_sparse``: the float pruned student as float32 with its weights sparse-encoded
  (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``), for XNNPACK's sparse inference; that applies
  only to float 1x1 convolutions with at least 2/3 zeros in a graph that starts with a 3x3
  stride-2 convolution on 3 channels (XNNPACK's README, "Sparse Inference"), which
  :func:`xnnpack_sparse_note` says of each file. Its latency is compared with the dense float
  file of the same student (``student_float``, converted with it).

A model that cannot meet a target is refused in one line naming the op or tensor
(:func:`problem`), before any file of the export is written.
"""

import dataclasses
from typing import FrozenSet, Optional, Tuple

from pipelines.config import PRODUCT, TARGETS
from pipelines.export import tflm

# coral.ai/docs/edgetpu/models-intro, "Supported operations" (TFLite builtin names).
EDGETPU_OPS = frozenset((
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D",
    "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN",
    "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB",
    "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"))
# The same table's "No fused activation function" limitation.
EDGETPU_NO_FUSED_ACTIVATION = frozenset(("AVERAGE_POOL_2D", "CONCATENATION", "MAX_POOL_2D"))

# tensorflow/lite/micro/micro_mutable_op_resolver.h (tflite-micro, 2026-08): every builtin it can
# register, and the custom ops of TFLM's own (the Python interpreter registers them all).
TFLM_OPS = frozenset((
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D",
    "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST",
    "CEIL", "CONCATENATION", "CONV_2D", "COS", "CUMSUM", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP",
    "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER",
    "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF", "L2_NORMALIZATION",
    "L2_POOL_2D", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGICAL_NOT",
    "LOGICAL_OR", "LOGISTIC", "LOG_SOFTMAX", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE",
    "READ_VARIABLE", "REDUCE_ALL", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND", "RSQRT", "SELECT_V2",
    "SHAPE", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V",
    "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SVDF",
    "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK",
    "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
    "CUSTOM:CIRCULAR_BUFFER", "CUSTOM:TFLite_Detection_PostProcess"))

FLOAT_TYPES = frozenset(("float32", "float16", "float64", "bfloat16"))


@dataclasses.dataclass(frozen=True)
class Target:
  """One runtime's rules. ``source``: ``qat`` (the QAT student, as the product) or ``student``
  (the float pruned student); ``mode``: the conversion (:data:`pipelines.export.tflite.MODES`).
  ``io``: ``float`` (float32 inputs and outputs, or ``--int8_io``'s), ``integer`` (int8, or one
  of ``io_types`` by ``--int8_io``'s type) or ``as_flagged`` (``--int8_io`` decides)."""

  name: str
  file: str  # the file name without .tflite, beside the product
  runtime: str  # who runs the file, as a message names it
  description: str
  source: str = "qat"
  mode: str = "qat"
  io: str = "as_flagged"
  io_types: Tuple[str, ...] = ("int8",)
  integer_only: bool = True
  static_shapes: bool = False
  ops: Optional[FrozenSet[str]] = None  # every op must be one of these; None: any
  ops_source: str = ""
  no_fused_activation: FrozenSet[str] = frozenset()
  max_dims_above_one: Optional[int] = None
  requires: Optional[str] = None  # a module the target's checks run (tflm.MODULE)
  not_checked: str = ""  # what is left to the real toolchain, said in the report

  def io_type(self, int8_io_type: str) -> str:
    """The integer type of this target's inputs and outputs under ``--int8_io``'s type."""
    return int8_io_type if int8_io_type in self.io_types else self.io_types[0]


TARGET_RECORDS = (
    Target("litert", PRODUCT, "LiteRT",
           "the product: QAT student, int8 weights and activations"),
    Target("edgetpu", "student_int8_for_edgetpu", "the Edge TPU",
           "QAT student for the Edge TPU compiler: integer inputs and outputs, Edge TPU ops only, "
           "batch fixed at 1",
           io="integer", io_types=("int8", "uint8"), static_shapes=True, ops=EDGETPU_OPS,
           ops_source="coral.ai Edge TPU supported operations",
           no_fused_activation=EDGETPU_NO_FUSED_ACTIVATION, max_dims_above_one=3,
           not_checked="edgetpu_compiler (Google's Debian package, not installable here) was not "
                       "run: the file meets the documented rules; the compiler decides which ops "
                       "it maps"),
    Target("tflm", "student_int8_for_tflm", "TFLite Micro",
           "QAT student for microcontrollers: int8 inputs and outputs, TFLM ops only, batch fixed "
           "at 1", io="integer", static_shapes=True, ops=TFLM_OPS,
           ops_source="TFLite Micro's MicroMutableOpResolver", requires=tflm.MODULE),
    Target("xnnpack_sparse", "student_float_sparse", "XNNPACK's sparse inference",
           "the float pruned student, float32 with sparse-encoded weights (XNNPACK sparse "
           "inference)", source="student", mode="sparse", io="float", integer_only=False),
)
BY_NAME = {t.name: t for t in TARGET_RECORDS}
assert tuple(BY_NAME) == TARGETS, "pipelines.config.TARGETS and the records disagree"


def get(name: str) -> Target:
  return BY_NAME[name]


def refusal_before_work(name: str, task: str) -> Optional[str]:
  """The one line that refuses ``--target=name`` for a ``task`` student before any work, or None:
  a regression output must stay float (an integer-output target would round every prediction
  to one of 256 levels), and a target whose checks need a package that is missing says how to
  add it."""
  target = BY_NAME[name]
  if target.io == "integer" and task == "regression":
    return ("--target=%s cannot take this student: its output is a regression value "
            "(--task=regression) that must stay float, and %s needs %s inputs and outputs; "
            "export it for litert or xnnpack_sparse" % (
                name, target.runtime, " or ".join(target.io_types)))
  if target.requires == tflm.MODULE and tflm.missing():
    return "--target=%s: %s" % (name, tflm.missing())
  return None


def problem(target: Target, model: dict, weights: dict, io_type: str) -> Optional[str]:
  """The first rule of ``target`` the file breaks, as one line naming the op or tensor, or None.

  ``model``: :func:`pipelines.export.tflite.inspect_model` of the file; ``weights``:
  :func:`~pipelines.export.tflite.inspect_weights`; ``io_type``: the integer type its inputs
  and outputs must have (for an ``integer`` target).
  """
  flag = "--target=%s" % target.name
  if target.io == "integer":
    for role in ("inputs", "outputs"):
      for tensor in model[role]:
        if tensor["dtype"] != io_type:
          return ("%s: %s tensor %r is %s; %s needs %s %s" % (
              flag, role[:-1], tensor["name"], tensor["dtype"], target.runtime, io_type, role))
  if target.integer_only and target.io == "integer":  # (litert's: the stage's own check)
    for op in model["ops"]:
      floats = [d for d in op["inputs"] + op["outputs"] if d in FLOAT_TYPES]
      if floats:
        return "%s: op #%s %s computes on %s tensors; %s runs integer ops only" % (
            flag, op["index"], op["op"], floats[0], target.runtime)
  if target.ops is not None:
    for op in model["ops"]:
      if op["op"] not in target.ops:
        return "%s: op #%s %s (%s -> %s) is not in %s" % (
            flag, op["index"], op["op"], ", ".join(op["inputs"]), ", ".join(op["outputs"]),
            target.ops_source)
  for op in model["ops"]:
    if op["op"] in target.no_fused_activation and op["activation"] not in (None, "NONE"):
      return "%s: op #%s %s has a fused %s activation; %s takes it without one" % (
          flag, op["index"], op["op"], op["activation"], target.runtime)
  if target.static_shapes and model["dynamic"]:
    return "%s: tensor %r has a dynamic dimension; %s needs static shapes" % (
        flag, model["dynamic"][0], target.runtime)
  if target.max_dims_above_one is not None:
    for tensor in model["tensors"]:
      big = [d for d in tensor["shape"][:-target.max_dims_above_one] if d > 1]
      if big:
        return ("%s: tensor %r has shape %s; %s allows a size above 1 in the %d innermost "
                "dimensions only" % (flag, tensor["name"], tensor["shape"], target.runtime,
                                     target.max_dims_above_one))
  if target.mode == "sparse":
    if weights["sparse_tensors"] == 0:
      return ("%s: the converter stored no weight tensor sparse-encoded (the pruned student's "
              "sparsity is %.3f): XNNPACK's sparse kernels have nothing to read; prune further "
              "or drop the target" % (flag, weights["sparsity"]))
    quantized = [t for t in weights["weight_dtypes"] if t not in FLOAT_TYPES]
    if quantized:
      return "%s: weights of type %s; XNNPACK's sparse kernels take float weights" % (
          flag, quantized[0])
  return None


def xnnpack_sparse_note(model: dict, weights: dict) -> str:
  """One sentence: whether XNNPACK's sparse inference can apply to this float file, from the
  conditions of XNNPACK's README ("Sparse Inference")."""
  if weights["sparse_tensors"] == 0:
    return "no sparse-encoded weights: XNNPACK runs its dense kernels"
  convs = [op for op in model["ops"] if op["op"] == "CONV_2D" and op["kernel"]]
  first = convs[0] if convs else None
  start = (first is not None and first["kernel"][1:3] == [3, 3] and first["stride"] == [2, 2]
           and first["kernel"][3] == 3)
  pointwise = [op for op in convs if op["kernel"][1:3] == [1, 1]]
  if not start:
    return ("XNNPACK's sparse inference cannot apply: it needs a graph that starts with a 3x3 "
            "stride-2 CONV_2D on 3 input channels (this one starts with %s), then 1x1 "
            "convolutions with at least 2/3 zeros; here %d of %d CONV_2D are 1x1" % (
                "a %s CONV_2D of stride %s" % ("x".join(map(str, first["kernel"][1:3])),
                                              "x".join(map(str, first["stride"])))
                if first else "no CONV_2D", len(pointwise), len(convs)))
  if not pointwise:
    return "XNNPACK's sparse inference cannot apply: the graph has no 1x1 CONV_2D"
  return ("XNNPACK's sparse inference may apply: the graph starts as it requires and has %d 1x1 "
          "CONV_2D; the measured latency says whether it did" % len(pointwise))
