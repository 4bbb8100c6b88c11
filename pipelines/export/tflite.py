"""TFLite: conversion, reading weights back out of the flatbuffer, batched evaluation, latency.

Every figure kdprune reports about an exported model is measured here on the
``.tflite`` bytes themselves:

* :func:`inspect_weights` parses the flatbuffer (TF's own schema) and reads
  the constant weight and bias tensors of every CONV_2D, DEPTHWISE_CONV_2D,
  FULLY_CONNECTED and TRANSPOSE_CONV op straight from their buffers. The
  interpreter cannot be used for this: after ``allocate_tensors`` it hides
  many constant tensors, and it would only give what it chooses to expose.
* :func:`evaluate` (classification) and :func:`evaluate_regression` run the
  whole test set through the interpreter in batches (the input is resized),
  quantizing int8 inputs and dequantizing int8 outputs with the tensors' own
  parameters.
* :func:`latency` times batch-1 inference on one thread: warm-up runs, then
  the median (and the 10th and 90th percentiles) of many timed ``invoke``
  calls, with LiteRT's default XNNPACK delegate or without it (the builtin
  kernels); :func:`filled_zeros` gives the same file with its zero weights made
  nonzero, the twin that shows what the zeros themselves buy in a runtime.
* :func:`inspect_model` lists what a target runtime's rules read (ops and their
  options, input and output tensors, dynamic shapes, sparse-encoded tensors).
"""

import contextlib
import gc
import gzip
import io
import logging as std_logging
import os
import re
import tempfile
import time
import warnings
from typing import Callable, Dict, Iterable, Optional

import flatbuffers
import numpy as np
from absl import logging

from models.compat import is_startup_noise, native_output_filtered, tf

from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402  (TFLite's flatbuffer schema)

# Ops whose input 1 is a weight tensor and input 2 (if any) a bias.
_WEIGHT_OPS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
               "TRANSPOSE_CONV": (1, 3), "CONV_3D": (1, 2)}
_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8,
             "INT16": np.int16, "INT32": np.int32, "INT64": np.int64}

# sparse: float32 with the weights sparse-encoded where the converter finds enough zeros
# (tf.lite.Optimize.EXPERIMENTAL_SPARSITY; DENSIFY ops restore them, or XNNPACK's sparse kernels
# read them).
MODES = ("float", "dynamic", "int8", "qat", "sparse")
_IO_TYPES = {"int8": "int8", "uint8": "uint8"}

# What the converter and the interpreter print from C++ on every call.
_TFLITE_NOISE = [re.compile(p) for p in (
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+",
    r"^[IW]\d{4} .*(tf_tfl_flatbuffer_helpers|flatbuffer_export|tf_saved_model_passes|"
    r"lower_static_tensor_list|quantize_model|tensorflow/lite)",
)]


def _is_noise(line: str) -> bool:
  return is_startup_noise(line) or any(p.search(line) for p in _TFLITE_NOISE)


@contextlib.contextmanager
def _quiet():
  """Silences the converter's Python warnings and absl INFO chatter for one call."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  tf_logger = std_logging.getLogger("tensorflow")
  tf_level = tf_logger.level
  tf_logger.setLevel(std_logging.ERROR)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    logging.set_verbosity(level)
    tf_logger.setLevel(tf_level)


def convert(model, mode: str, representative: Optional[Callable[[], Iterable]] = None,
            int8_io: bool = False, io_type: str = "int8") -> bytes:
  """Converts a tf_keras ``model`` to TFLite bytes (through :func:`save_serving`, in a temporary
  directory).

  Modes: ``float`` (float32, no optimization), ``dynamic`` (post-training
  dynamic-range: int8 weights, float activations), ``int8`` (post-training
  full-integer with ``representative`` batches; int8 builtins only) and
  ``qat`` (a quantization-aware model: its learned ranges give int8 weights
  and activations), and ``sparse`` (float32 with the weights sparse-encoded,
  for XNNPACK's sparse kernels). ``int8_io`` makes the input and output int8
  (``io_type="uint8"``: uint8) too (for ``int8``/``qat``), as integer-only
  accelerators want; by default they stay float32 and the model quantizes at
  its edges.
  """
  with tempfile.TemporaryDirectory(prefix="kdprune-convert-") as tmp:
    path = os.path.join(tmp, "saved_model")
    save_serving(model, path)
    return convert_saved_model(path, mode, representative=representative, int8_io=int8_io,
                               io_type=io_type)


def save_serving(model, path: str, autograph: bool = True, input_shape=None) -> None:
  """Saves ``model`` as a SavedModel whose only function is ``serving_default`` (batch of float32
  inputs -> ``{output name: outputs}``). ``input_shape`` (one example's) is needed only for a
  model that knows none (a subclassed one; its input is then named ``inputs``, its output
  ``outputs``).

  ``autograph=False`` traces it as written: for kdprune's own students (Keras layers and tfmot's
  wrappers, which need no conversion); a teacher may hold a user's code and keeps the default.

  One traced function and the variables it reads, nothing else: the Keras model is not saved as an
  object. ``tf.saved_model.save`` of anything that holds a tf_keras model (and
  ``TFLiteConverter.from_keras_model``, which does that first) also traces every layer's calls for
  Keras' own loader, and the converter then loads them all back: on an EfficientNet-B0 QAT
  student that is 100 s of saving and converting against 23 s this way (BUILD_NOTES.md,
  "Pitfall: saving a Keras model traces every layer"). :func:`convert_saved_model` converts the
  file to the same ops and the same outputs as TF's ``from_keras_model`` gives for the model
  (``tests/test_qat_export.py``).
  """
  if getattr(model, "inputs", None):
    name, shape = model.inputs[0].name.split(":")[0], list(model.input_shape[1:])
    output = model.output_names[0]
  elif input_shape is not None:
    name, shape, output = "inputs", list(input_shape), "outputs"
  else:
    raise ValueError("%s has no inputs of its own (a subclassed model): pass input_shape" %
                     type(model).__name__)
  spec = tf.TensorSpec([None] + shape, tf.float32, name=name)

  @tf.function(input_signature=[spec], autograph=autograph)
  def serve(x):
    return {output: model(x, training=False)}

  function = serve.get_concrete_function()
  module = tf.Module()
  # What the function reads, not the Keras model: every variable the trace captured (an imported
  # SavedModel teacher's live outside the Keras model's weights).
  module.captured_variables = list(function.variables)
  tf.saved_model.save(module, path, signatures={"serving_default": function})


def convert_saved_model(path: str, mode: str,
                        representative: Optional[Callable[[], Iterable]] = None,
                        int8_io: bool = False, io_type: str = "int8",
                        batch: Optional[int] = None) -> bytes:
  """:func:`convert` for a SavedModel directory (its serving signature).

  ``io_type`` (``int8`` or ``uint8``) is the type of the integer inputs and outputs ``int8_io``
  asks for. ``batch`` fixes the batch dimension (static shapes: no tensor of the file has a
  dynamic size, as the Edge TPU and TFLite Micro want); by default it stays dynamic.
  """
  if batch is None:
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    return _convert(converter, mode, representative, int8_io, io_type)
  loaded = tf.saved_model.load(path)
  signature = loaded.signatures["serving_default"]
  (name, spec), = signature.structured_input_signature[1].items()
  static = tf.TensorSpec([batch] + spec.shape.as_list()[1:], spec.dtype, name=name)
  function = tf.function(lambda x: signature(**{name: x}), input_signature=[static],
                         autograph=False).get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
  return _convert(converter, mode, representative, int8_io, io_type)


def _convert(converter, mode, representative, int8_io, io_type="int8") -> bytes:
  if mode not in MODES:
    raise ValueError("unknown conversion mode %r (one of %s)" % (mode, ", ".join(MODES)))
  if io_type not in _IO_TYPES:
    raise ValueError("unknown integer input/output type %r (int8 or uint8)" % io_type)
  if mode == "sparse":
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
  elif mode != "float":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "int8":
    if representative is None:
      raise ValueError("full-integer conversion needs a representative dataset")
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  if int8_io and mode in ("int8", "qat"):
    converter.inference_input_type = getattr(tf, io_type)
    converter.inference_output_type = getattr(tf, io_type)
  with _quiet(), native_output_filtered(_is_noise, ("stdout", "stderr")), _gc_frozen():
    return short_tensor_names(bytes(converter.convert()))


def editable(data: bytes):
  """The flatbuffer as TFLite's object API, to edit and :func:`repacked`; None for a file whose
  buffers live outside the flatbuffer (the >2 GB layout), which the editors return as it is."""
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
  return None if any(getattr(b, "offset", 0) for b in model.buffers) else model


def repacked(model, size_hint: int) -> bytes:
  builder = flatbuffers.Builder(size_hint + 1024)
  builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
  return bytes(builder.Output())


def short_tensor_names(data: bytes) -> bytes:
  """``data`` with each tensor named by the first piece of its name only.

  The converter names a tensor after every op fused into it
  (``model/quant_relu_2/Relu;model/quant_bn_2/FusedBatchNormV3;model/quant_conv_2/Conv2D...``);
  the first piece (``model/quant_relu_2/Relu``) still says which layer it comes from, and the
  rest weighs on a small file: 180 of the 9,848 gzipped bytes of the MNIST preset's student
  (BUILD_NOTES.md, "Decision: short tensor names and a preprocessing record that can stay outside
  the file"). Graph, weights and signatures are unchanged; files whose buffers live outside the
  flatbuffer (the >2 GB layout) are returned as they are.
  """
  model = editable(data)
  if model is None:
    return data
  changed = False
  for graph in model.subgraphs:
    for tensor in graph.tensors:
      if tensor.name is not None and b";" in tensor.name:
        tensor.name = tensor.name.split(b";", 1)[0]
        changed = True
  return repacked(model, len(data)) if changed else data


@contextlib.contextmanager
def _gc_frozen():
  """Every object alive now left out of garbage collection for one call.

  The SavedModel converter ends with a full ``gc.collect()`` to free the model it loaded, and a
  full collection walks every object of the process: in a long process (a notebook, a sweep, a
  test worker) that is most of the time of a small model's conversion (0.35 s per call after a
  few tiny pipelines, and growing with the heap; BUILD_NOTES.md, "Pitfall: the converter's full
  garbage collection"). What the converter
  created is still collected; the frozen objects return to the collector afterwards.
  """
  gc.freeze()
  try:
    yield
  finally:
    gc.unfreeze()


def with_metadata(data: bytes, name: str, payload: bytes) -> bytes:
  """``data`` with ``payload`` stored as the flatbuffer's metadata entry ``name`` (replacing one of
  that name), as TFLite's own metadata writers add it; the graph and weights are unchanged.

  Files whose buffers live outside the flatbuffer (the >2 GB layout) are returned as they are.
  """
  model = editable(data)
  if model is None:
    return data
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(payload, dtype=np.uint8)
  model.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = name
  entry.buffer = len(model.buffers) - 1
  model.metadata = [m for m in (model.metadata or []) if _text(m.name) != name] + [entry]
  return repacked(model, len(data) + len(payload))


def read_metadata(data: bytes, name: str) -> Optional[bytes]:
  """The metadata entry ``name`` of a .tflite (see :func:`with_metadata`), or None."""
  model = schema.Model.GetRootAsModel(bytearray(data), 0)
  for i in range(model.MetadataLength()):
    entry = model.Metadata(i)
    if _text(entry.Name()) == name:
      return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
  return None


def gzip_size(data: bytes) -> int:
  """Size of ``data`` gzipped at level 9 (what a download or an app bundle would carry)."""
  buf = io.BytesIO()
  with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as f:
    f.write(data)
  return len(buf.getvalue())


def _parse(data: bytes):
  """The flatbuffer as TFLite's object API, with the op and type names by code."""
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
  return model, _OP_NAMES, _TYPE_NAMES


_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_ACTIVATIONS = {v: k for k, v in vars(schema.ActivationFunctionType).items()
                if not k.startswith("_")}
# Ops that turn a stored weight into the tensor a kernel reads: DENSIFY (a sparse-encoded weight),
# DEQUANTIZE (a float16 or int8 one feeding a float kernel).
_WEIGHT_DECODERS = ("DENSIFY", "DEQUANTIZE")


def _op_name(model, op) -> str:
  code = model.operatorCodes[op.opcodeIndex]
  return _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")


def inspect_weights(data: bytes) -> dict:
  """Reads the weights of every conv/fully-connected op out of the flatbuffer.

  Returns ``{"params", "nonzero_params", "weights", "weight_zeros",
  "sparsity", "weight_dtypes", "sparse_tensors", "layers": [{"op", "name", "shape",
  "dtype", "weights", "zeros", "sparsity", "quantization", "encoding"}]}`` where ``params``
  counts weight and bias elements, and ``sparsity`` is the fraction of zero weight elements
  (biases excluded, as in tfmot). A quantized zero is the stored value equal to the
  tensor's zero point (0 for TFLite's symmetric int8 weights), so the count
  is exactly the zeros the int8 kernels multiply by. A weight that reaches its op through a
  DENSIFY (sparse-encoded: only its nonzero values are stored, ``encoding`` ``sparse``) or a
  DEQUANTIZE (float16 weights of a float file) is read where it is stored.
  ``quantization`` is ``per-channel`` (one scale per output channel), ``per-tensor`` or
  None (float weights).
  """
  model, op_names, type_names = _parse(data)
  layers = []
  params = nonzero = weights = zeros = sparse = 0
  dtypes = set()
  seen = set()
  for graph in model.subgraphs:
    producers = {int(t): op for op in graph.operators for t in (
        op.outputs if op.outputs is not None else [])}
    for op in graph.operators:
      name = _op_name(model, op)
      if name not in _WEIGHT_OPS:
        continue
      w_idx, b_idx = _WEIGHT_OPS[name]
      for role, idx in (("weight", w_idx), ("bias", b_idx)):
        if idx >= len(op.inputs) or op.inputs[idx] < 0:
          continue
        index = int(op.inputs[idx])
        producer = producers.get(index)
        if producer is not None and _op_name(model, producer) in _WEIGHT_DECODERS:
          index = int(producer.inputs[0])  # the stored weight the decoder reads
        tensor = graph.tensors[index]
        stored = _stored(model, tensor, type_names)
        if stored is None or (id(graph), index) in seen:
          continue  # a runtime input, or a tensor already counted (shared weights)
        seen.add((id(graph), index))
        values, size, shape = stored
        n_zero = size - int(np.sum(values != _zero_points(tensor, values, dense=(
            tensor.sparsity is None))))
        params += size
        nonzero += size - n_zero
        if role == "weight":
          weights += size
          zeros += n_zero
          sparse += tensor.sparsity is not None
          dtype = type_names.get(tensor.type, str(tensor.type)).lower()
          dtypes.add(dtype)
          layers.append({"op": name, "name": _text(tensor.name), "shape": shape,
                         "dtype": dtype, "weights": int(size), "zeros": n_zero,
                         "sparsity": round(n_zero / max(1, size), 6),
                         "quantization": _granularity(tensor),
                         "encoding": "dense" if tensor.sparsity is None else "sparse"})
  return {"params": int(params), "nonzero_params": int(nonzero), "weights": int(weights),
          "weight_zeros": int(zeros), "sparsity": round(zeros / max(1, weights), 6),
          "weight_dtypes": sorted(dtypes), "sparse_tensors": int(sparse), "layers": layers}


def _granularity(tensor) -> Optional[str]:
  q = tensor.quantization
  if q is None or q.scale is None or len(q.scale) == 0:
    return None
  return "per-channel" if len(q.scale) > 1 else "per-tensor"


_FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16", "complex64", "complex128"}


def inspect_ops(data: bytes) -> dict:
  """Every op of the flatbuffer with the types of its input and output tensors.

  Returns ``{"ops": [{"index", "op", "inputs", "outputs", "integer"}], "by_op":
  {op: count}, "integer_only", "float_ops"}`` (``index`` is the op's position in
  its subgraph, prefixed ``<subgraph>:`` beyond the first). An op computes in
  integers when none of its tensors is floating point; the only float ops an
  integer-only model may hold are a QUANTIZE whose float inputs are the model's
  inputs and a DEQUANTIZE whose float outputs are its outputs (with
  ``--int8_io`` there are none). ``float_ops`` describes every other op that
  touches a float tensor, e.g. ``"#3 SIN (float32 -> float32)"``.
  """
  model, _, type_names = _parse(data)
  ops, by_op, float_ops = [], {}, []
  for g, graph in enumerate(model.subgraphs):
    graph_inputs = {int(i) for i in (graph.inputs if graph.inputs is not None else [])}
    graph_outputs = {int(i) for i in (graph.outputs if graph.outputs is not None else [])}
    for i, op in enumerate(graph.operators):
      name = _full_op_name(model, op)

      def types(indices):
        return [(int(t), type_names.get(graph.tensors[t].type, str(graph.tensors[t].type)).lower())
                for t in (indices if indices is not None else []) if t >= 0]
      ins, outs = types(op.inputs), types(op.outputs)
      float_in = [t for t, d in ins if d in _FLOAT_TYPES]
      float_out = [t for t, d in outs if d in _FLOAT_TYPES]
      edge = ((name == "QUANTIZE" and not float_out and set(float_in) <= graph_inputs) or
              (name == "DEQUANTIZE" and not float_in and set(float_out) <= graph_outputs))
      integer = not (float_in or float_out)
      index = str(i) if g == 0 else "%d:%d" % (g, i)
      ops.append({"index": index, "op": name, "inputs": [d for _, d in ins],
                  "outputs": [d for _, d in outs], "integer": integer})
      by_op[name] = by_op.get(name, 0) + 1
      if not integer and not edge:
        float_ops.append("#%s %s (%s -> %s)" % (index, name, ", ".join(d for _, d in ins),
                                                ", ".join(d for _, d in outs)))
  return {"ops": ops, "by_op": by_op, "integer_only": not float_ops, "float_ops": float_ops}


def _full_op_name(model, op) -> str:
  """``CONV_2D``; a custom op as ``CUSTOM:<its name>``."""
  name = _op_name(model, op)
  if name == "CUSTOM" or not name:
    code = model.operatorCodes[op.opcodeIndex]
    name = "CUSTOM:%s" % _text(code.customCode) if code.customCode else "OP%d" % (
        code.builtinCode)
  return name


def inspect_model(data: bytes) -> dict:
  """What a target runtime's rules read from a file (:mod:`pipelines.export.targets`).

  Returns ``{"inputs", "outputs": [{"name", "dtype", "shape", "shape_signature"}],
  "dynamic": [names of tensors with a dynamic (-1) dimension], "tensors": [{"name", "dtype",
  "shape"} of every tensor computed at run time], "ops": [{"index", "op", "inputs", "outputs",
  "activation", "stride", "kernel"}], "sparse_tensors"}`` (``activation``: the op's fused
  activation or None; ``stride`` and ``kernel`` (the weight tensor's shape) for convolutions).
  """
  model, _, type_names = _parse(data)

  def dtype(tensor):
    return type_names.get(tensor.type, str(tensor.type)).lower()

  def describe(graph, t):
    tensor = graph.tensors[t]
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    signature = ([int(d) for d in tensor.shapeSignature] if tensor.shapeSignature is not None
                 and len(tensor.shapeSignature) else shape)
    return {"name": _text(tensor.name), "dtype": dtype(tensor), "shape": shape,
            "shape_signature": signature}

  out = {"inputs": [], "outputs": [], "dynamic": [], "tensors": [], "ops": [],
         "sparse_tensors": 0}
  for g, graph in enumerate(model.subgraphs):
    if g == 0:
      out["inputs"] = [describe(graph, int(t)) for t in graph.inputs]
      out["outputs"] = [describe(graph, int(t)) for t in graph.outputs]
    for t, tensor in enumerate(graph.tensors):
      out["sparse_tensors"] += tensor.sparsity is not None
      info = describe(graph, t)
      if -1 in info["shape_signature"]:
        out["dynamic"].append(info["name"])
      buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
      if buffer is None or buffer.data is None or len(buffer.data) == 0:
        out["tensors"].append({k: info[k] for k in ("name", "dtype", "shape")})
    for i, op in enumerate(graph.operators):
      options = op.builtinOptions
      activation = getattr(options, "fusedActivationFunction", None)
      entry = {"index": str(i) if g == 0 else "%d:%d" % (g, i), "op": _full_op_name(model, op),
               "inputs": [dtype(graph.tensors[t]) for t in op.inputs if t >= 0],
               "outputs": [dtype(graph.tensors[t]) for t in op.outputs if t >= 0],
               "activation": None if activation is None else _ACTIVATIONS.get(activation),
               "stride": None, "kernel": None}
      if entry["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1:
        entry["stride"] = [int(options.strideH), int(options.strideW)]
        entry["kernel"] = describe(graph, int(op.inputs[1]))["shape"]
      out["ops"].append(entry)
  return out


def filled_zeros(data: bytes) -> bytes:
  """``data`` with every zero weight of its conv/fully-connected ops made nonzero (a quantized
  one the zero point + 1, a float one 1e-3): the same graph, dtypes and kernels as the file, so
  its latency is what the file would run at without its zeros. Sparse-encoded weights are
  left as they are (their twin is the dense-encoded conversion of the same model)."""
  model, type_names = editable(data), _TYPE_NAMES
  if model is None:
    return data
  for graph in model.subgraphs:
    for op in graph.operators:
      name = _op_name(model, op)
      if name not in _WEIGHT_OPS or _WEIGHT_OPS[name][0] >= len(op.inputs):
        continue
      tensor = graph.tensors[int(op.inputs[_WEIGHT_OPS[name][0]])]
      stored = _stored(model, tensor, type_names)
      if stored is None or tensor.sparsity is not None:
        continue
      values = np.array(stored[0])
      zero = _zero_points(tensor, values)
      filler = (zero + 1 if values.dtype.kind in "iu" else 1e-3)
      values = np.where(values == zero, filler, values).astype(values.dtype)
      model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)
  return repacked(model, len(data))


def _layer_of(tensor_name: str, layer_names) -> Optional[str]:
  """The Keras layer a weight tensor belongs to, from its name (``student/quant_dense_1/MatMul;...``).

  TFLite names a tensor after the ops it was fused from; the first name piece that holds a
  path component equal to a layer's name (or tfmot's ``quant_<name>``) decides.
  """
  for piece in tensor_name.split(";"):
    for part in piece.split("/"):
      name = part[len("quant_"):] if part.startswith("quant_") else part
      if name in layer_names:
        return name
  return None


def lost_zeros(tflite_layers, student_layers: Dict[str, dict]) -> list:
  """Pruned layers whose weight tensor in the file holds fewer zeros than the student's layer.

  ``tflite_layers`` is :func:`inspect_weights`' ``layers``; ``student_layers`` maps each pruned
  layer to its ``{"zeros", ...}`` (the student's pruning report). A layer is compared with the
  tensor(s) named after it, so the rounding zeros of other (dense) layers cannot hide lost zeros.
  Pruned layers no tensor is named after are compared together with the unnamed tensors.
  Returns ``[(layer, zeros in the file, student zeros)]``.
  """
  found: Dict[str, int] = {}
  unmapped_zeros = 0
  for entry in tflite_layers:
    layer = _layer_of(entry["name"], student_layers)
    if layer is None:
      unmapped_zeros += int(entry["zeros"])
    else:
      found[layer] = found.get(layer, 0) + int(entry["zeros"])
  short = [(layer, found[layer], int(e["zeros"])) for layer, e in student_layers.items()
           if layer in found and found[layer] < int(e["zeros"])]
  missing = [layer for layer in student_layers if layer not in found]
  missing_zeros = sum(int(student_layers[layer]["zeros"]) for layer in missing)
  if missing and unmapped_zeros < missing_zeros:
    short.append(("+".join(missing), unmapped_zeros, missing_zeros))
  return short


def _text(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _stored(model, tensor, type_names):
  """``(values, elements, shape)`` of a constant tensor: its values (a sparse-encoded tensor's
  stored ones only), how many elements the tensor has, its shape; None for a runtime tensor."""
  buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
  if buffer is None or buffer.data is None or len(buffer.data) == 0:
    return None
  dtype = _NP_TYPES.get(type_names.get(tensor.type))
  if dtype is None:
    return None
  raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
  values = np.frombuffer(raw, dtype=dtype)
  shape = [int(s) for s in tensor.shape] if tensor.shape is not None else [values.size]
  size = int(np.prod(shape))
  if tensor.sparsity is not None:
    return values, size, shape  # only the stored (nonzero) values, in the traversal order
  if size != values.size:
    return None  # a packed tensor: not a plain dense buffer
  return values.reshape(shape), size, shape


def _zero_points(tensor, values: np.ndarray, dense: bool = True):
  """The value that means 0.0: the zero point(s) of a quantized tensor, else 0. (The stored
  values of a sparse tensor are compared with its first zero point: TFLite's weights are
  symmetric, every zero point 0.)"""
  q = tensor.quantization
  if q is None or q.zeroPoint is None or len(q.zeroPoint) == 0 or values.dtype.kind == "f":
    return 0
  zp = np.asarray(q.zeroPoint, dtype=np.int64)
  if zp.size == 1 or not dense:
    return zp.reshape(-1)[0]
  axis = int(q.quantizedDimension)
  shape = [1] * values.ndim
  shape[axis] = zp.size
  return zp.reshape(shape)


def interpreter(data: bytes, num_threads: int = 1, xnnpack: bool = True):
  """A TFLite interpreter for ``data``: LiteRT's (``ai_edge_litert``) when installed, else TF's.

  ``xnnpack=False`` runs the builtin kernels alone (``OpResolverType.
  BUILTIN_WITHOUT_DEFAULT_DELEGATES``): the XNNPACK delegate LiteRT applies by default is left
  out, as on a runtime built without it.
  """
  try:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # pylint: disable=g-import-not-at-top
  except ImportError:
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
    OpResolverType = tf.lite.experimental.OpResolverType  # pylint: disable=invalid-name
  options = {} if xnnpack else {
      "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
  with warnings.catch_warnings(), native_output_filtered(_is_noise):
    warnings.simplefilter("ignore")  # TF's interpreter announces its move to LiteRT
    return Interpreter(model_content=data, num_threads=num_threads, **options)


def io_details(data: bytes):
  """``(input details, output details)`` of a file's first input and output, as LiteRT gives
  them (``dtype``, ``shape``, ``quantization``: the scale and zero point of an integer one)."""
  interp = interpreter(data)
  return interp.get_input_details()[0], interp.get_output_details()[0]


def to_input(x: np.ndarray, detail) -> np.ndarray:
  """Float inputs as the input tensor takes them: an int8/uint8 one quantized with its own scale
  and zero point (rounded, clipped to the type's range)."""
  if detail["dtype"] in (np.int8, np.uint8):
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])
  return x.astype(detail["dtype"])


def from_output(y: np.ndarray, detail) -> np.ndarray:
  """An output tensor's values as floats: an int8/uint8 one dequantized with its own
  parameters."""
  if detail["dtype"] in (np.int8, np.uint8):
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale
  return y.astype(np.float32)


class Runner:
  """Runs a .tflite model on float inputs of any batch size; returns float outputs.

  A file whose batch is fixed (static shapes: the edgetpu and tflm targets' files) runs one
  example per invoke, as its runtime runs it."""

  def __init__(self, data: bytes, num_threads: int = 1, xnnpack: bool = True):
    self.interpreter = interpreter(data, num_threads, xnnpack)
    self.input = self.interpreter.get_input_details()[0]
    self.output_index = self.interpreter.get_output_details()[0]["index"]
    self.batch = None
    signature = self.input.get("shape_signature")
    self.static = (signature is not None and len(signature) > 0 and -1 not in list(signature))

  def __call__(self, x: np.ndarray) -> np.ndarray:
    if self.static and x.shape[0] != self.input["shape"][0]:
      step = int(self.input["shape"][0])
      return np.concatenate([self(x[i:i + step]) for i in range(0, x.shape[0], step)])
    if self.batch != x.shape[0]:
      self.interpreter.resize_tensor_input(self.input["index"], list(x.shape))
      with native_output_filtered(_is_noise):  # the XNNPACK delegate announces itself here
        self.interpreter.allocate_tensors()
      self.batch = x.shape[0]
    self.interpreter.set_tensor(self.input["index"], to_input(x, self.input))
    self.interpreter.invoke()
    detail = [d for d in self.interpreter.get_output_details() if d["index"] == self.output_index][0]
    return from_output(self.interpreter.get_tensor(self.output_index), detail)


def evaluate(data: bytes, batches, num_threads: Optional[int] = None) -> Dict[str, float]:
  """Accuracy and mean cross-entropy of a logits .tflite over ``(x, y)`` batches (the whole set)."""
  runner = Runner(data, num_threads=num_threads or 2)
  correct = total = 0
  loss_sum = 0.0
  for x, y in batches:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    logits = runner(x).reshape(len(y), -1)
    correct += int(np.sum(np.argmax(logits, -1) == y))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss_sum += float(-np.sum(log_probs[np.arange(len(y)), y]))
    total += len(y)
  return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total),
          "examples": total}


def evaluate_regression(data: bytes, batches, loss: str = "mse",
                        num_threads: Optional[int] = None) -> Dict[str, float]:
  """MSE and MAE of a regression .tflite over ``(x, y)`` batches (the whole set).

  The outputs are float: a float32 output as it is, an int8 one (``--int8_io``)
  dequantized with its own scale and zero point (:class:`Runner`).
  """
  runner = Runner(data, num_threads=num_threads or 2)
  sq = ab = 0.0
  count = total = 0
  for x, y in batches:
    x = np.asarray(x, dtype=np.float32)
    pred = runner(x).reshape(len(x), -1).astype(np.float64)
    diff = pred - np.asarray(y, dtype=np.float64).reshape(pred.shape)
    sq += float(np.sum(diff ** 2))
    ab += float(np.sum(np.abs(diff)))
    count += diff.size
    total += len(x)
  mse, mae = sq / max(1, count), ab / max(1, count)
  return {"mse": mse, "mae": mae, "loss": mse if loss == "mse" else mae, "examples": total}


def latency(data: bytes, example: np.ndarray, runs: int = 200, warmup: int = 20,
            num_threads: int = 1, xnnpack: bool = True) -> Dict[str, float]:
  """Batch-1 latency on ``num_threads`` threads: the median, 10th and 90th percentiles of ``runs``
  timed invokes, in ms; with LiteRT's default XNNPACK delegate, or without it (``xnnpack=False``:
  the builtin kernels)."""
  runner = Runner(data, num_threads=num_threads, xnnpack=xnnpack)
  x = np.asarray(example, dtype=np.float32)[None]
  runner(x)  # allocate for batch 1
  interp = runner.interpreter
  for _ in range(warmup):
    interp.invoke()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    interp.invoke()
    times.append(time.perf_counter() - start)
  ms = np.asarray(times) * 1e3
  return {"median": round(float(np.median(ms)), 4), "p10": round(float(np.percentile(ms, 10)), 4),
          "p90": round(float(np.percentile(ms, 90)), 4), "runs": int(runs),
          "threads": int(num_threads), "xnnpack": bool(xnnpack)}


def representative(bundle, count: int, seed: int = 0):
  """Batch-1 calibration inputs: ``count`` (normalized) training examples sampled across the split.

  Seeded (the stage passes the data seed): the same run calibrates on the same
  examples. Not the first ``count`` in storage order, which for a class-sorted
  file would be a single class and give the int8 model skewed activation ranges.
  """
  xs, _ = bundle.sample("train", count, seed)

  def gen():
    for i in range(len(xs)):
      yield [xs[i:i + 1]]
  return gen
