"""The sweep's accuracy/size Pareto front: marking it, ``sweep.md`` and ``pareto.png``.

Pure formatting of ``sweep.json``'s content (no TensorFlow).
"""

from typing import List

from pipelines.export import report
from pipelines.runtime import rundir


def pareto(points: List[dict], key: str = "test_accuracy", higher: bool = True) -> List[dict]:
  """Marks ``pareto: True`` on entries no other entry beats on both ``key`` (accuracy: higher is
  better; for regression ``test_mse`` with ``higher=False``) and size."""
  sign = 1 if higher else -1
  for p in points:
    p["pareto"] = not any(
        q is not p and q["tflite_gzip_bytes"] <= p["tflite_gzip_bytes"] and
        sign * q[key] >= sign * p[key] and
        (q["tflite_gzip_bytes"] < p["tflite_gzip_bytes"] or sign * q[key] > sign * p[key])
        for q in points)
  return points


def _score(out: dict):
  """``(key, label, format)`` of the sweep's headline: accuracy, or MSE for regression."""
  score = out.get("score") or {"key": "test_accuracy", "label": "accuracy"}
  if score["key"].endswith("_accuracy"):  # test_accuracy; the search ranks on val_accuracy
    return score["key"], "acc", lambda v: "%.2f%%" % (100 * v)
  return score["key"], score["label"], lambda v: "%.5g" % v


def markdown(out: dict) -> str:
  key, label, fmt = _score(out)
  lines = ["# kdprune sweep", "",
           "Int8 students measured on their .tflite files; * marks the %s/size Pareto "
           "front." % ("accuracy" if key == "test_accuracy" else label), "",
           "| student | structure | method | target | width | int8 test %s | gzip | latency (ms) | "
           "sparsity in file | nonzero |" % label,
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for e in sorted(out["students"], key=lambda e: e["tflite_gzip_bytes"]):
    lines.append("| %s%s | %s | %s | %.3f | %s | %s | %s | %.3f | %.3f | %s |" % (
        e["student"], " *" if e["pareto"] else "", e["structure"], e.get("method", "magnitude"),
        e["target_sparsity"], e["width"], fmt(e[key]), report.human_bytes(e["tflite_gzip_bytes"]),
        e["latency_ms"], e["sparsity"], "{:,}".format(e["nonzero_params"])))
  t = out.get("teacher")
  if t:
    lines += ["", "Float teacher (.tflite): %s, %s gzipped, %.3f ms." % (
        fmt(t[key]), report.human_bytes(t["tflite_gzip_bytes"]), t["latency_ms"])]
  return "\n".join(lines) + "\n"


def plot(out: dict, path: str) -> None:
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  key, label, _ = _score(out)
  scale = 100 if key.endswith("_accuracy") else 1
  split = "validation" if key.startswith("val_") else "test"
  program = out.get("program", "kdprune sweep")
  pts = out["students"]
  ax.scatter([p["tflite_gzip_bytes"] for p in pts], [scale * p[key] for p in pts],
             color="tab:blue", zorder=3, label="int8 students")
  front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["tflite_gzip_bytes"])
  ax.plot([p["tflite_gzip_bytes"] for p in front], [scale * p[key] for p in front],
          color="tab:red", zorder=2, label="Pareto front")
  for p in pts:
    ax.annotate(p["student"], (p["tflite_gzip_bytes"], scale * p[key]),
                textcoords="offset points", xytext=(5, 4), fontsize=7)
  t = out.get("teacher")
  if t:
    ax.axhline(scale * t[key], color="tab:gray", linestyle="--",
               label="float teacher (%s %.5g, %d B gzipped)" % (label, scale * t[key],
                                                               t["tflite_gzip_bytes"]))
  ax.set_xscale("log")
  ax.margins(x=0.25, y=0.12)
  ax.set_xlabel("gzipped int8 .tflite size (bytes, log scale)")
  ax.set_ylabel("%s %s (TFLite interpreter)" % (split, "accuracy, %" if scale == 100 else label))
  ax.set_title("%s: %s vs size" % (program, "accuracy" if scale == 100 else label))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  with rundir.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png")
  plt.close(fig)
