"""What a small .tflite's gzipped bytes are made of.

  python -m benchmarks.tflite_bytes runs/mnist/export/tiny5kb/student_qat_int8.tflite [...]

For each file: its gzipped size (level 9, as the export reports it), then the same file with one
part taken away at a time, each repacked by TFLite's own flatbuffer schema and gzipped: the
weight and bias buffers zeroed (what is left is the file's overhead: graph, tensors,
quantization parameters, names, metadata), every tensor name but the inputs' and outputs'
emptied, and each metadata entry dropped. The differences are what each part costs gzipped.
"""

import sys

import numpy as np

from pipelines.export import tflite as tflite_tools


def _model(data: bytes):
  return tflite_tools.editable(data)


def _gzip(model) -> int:
  return tflite_tools.gzip_size(tflite_tools.repacked(model, 0))


def anatomy(data: bytes) -> dict:
  """``{"gzip", "repacked", "weights_zeroed", "names_emptied", "without <metadata>": ...}``."""
  out = {"gzip": tflite_tools.gzip_size(data), "repacked": _gzip(_model(data))}
  model = _model(data)
  metadata = {m.buffer for m in model.metadata or []}
  for i, buffer in enumerate(model.buffers):
    if buffer.data is not None and i not in metadata:
      buffer.data = np.zeros_like(buffer.data)
  out["weights_zeroed"] = _gzip(model)
  model = _model(data)
  for graph in model.subgraphs:
    keep = set(int(t) for t in graph.inputs) | set(int(t) for t in graph.outputs)
    for i, tensor in enumerate(graph.tensors):
      if i not in keep:
        tensor.name = b""
  out["names_emptied"] = _gzip(model)
  for entry in _model(data).metadata or []:
    model = _model(data)
    model.buffers[entry.buffer].data = None
    model.metadata = [m for m in model.metadata if m.name != entry.name]
    out["without " + entry.name.decode()] = _gzip(model)
  return out


def main(paths):
  for path in paths:
    with open(path, "rb") as f:
      parts = anatomy(f.read())
    print(path)
    base = parts["repacked"]
    for key, value in parts.items():
      cost = "" if key in ("gzip", "repacked") else "  (%+d)" % (value - base)
      print("  %-36s %7d%s" % (key, value, cost))


if __name__ == "__main__":
  main(sys.argv[1:])
