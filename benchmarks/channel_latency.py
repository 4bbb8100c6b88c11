"""Channel pruning against unstructured pruning: int8 accuracy and batch-1 latency of the same student.

  python -m benchmarks.channel_latency --workdir=runs/digits_ch            # embedded digits
  python -m benchmarks.channel_latency --flagfile=launch/presets/mnist.cfg \\
      --workdir=runs/mnist48_ch

On a workdir (a finished teacher is reused, or trained first), trains the
student the flags describe twice from the same starting architecture, each
through student -> QAT -> export under its own ``--student_name``:

* ``<prefix>_unstructured``: as flagged (tfmot magnitude pruning, ``--final_sparsity``);
* ``<prefix>_channels``: ``--pruning_structure=channels`` removing
  ``--channel_fraction`` of the units (same schedule steps, no unstructured zeros);
* with ``--bench_combined``, ``<prefix>_channels_sparse``: shrink, then sparsify to
  ``--final_sparsity`` (twice the training: the sparsify phase runs another ``--student_epochs``).

Prints JSON, then a table: int8 .tflite test accuracy, parameters and batch-1
one-thread latency (from each export's report.json, and timed again here with
the two files interleaved, ``--latency_rounds`` x ``--latency_runs``, so both
see the same machine load), and the latency ratio (the interleaved one).
The goal (issue 8): at int8 accuracy within 0.2 points, the channels student is
at least 2x faster. Finished stages are reused (``--force`` reruns them).
"""

import dataclasses
import json

import numpy as np
from absl import flags

from benchmarks import tflite_latency
from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.runtime import rundir
from pipelines.stages import export, pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("bench_prefix", "bench", "Prefix of the students' names.")
flags.DEFINE_string("bench_suffix", "", "Appended to the channels students' names (e.g. 70 for "
                    "--channel_fraction=0.7), so several fractions share one unstructured student.")
flags.DEFINE_bool("bench_combined", False, "Also train <prefix>_channels_sparse: shrink, then "
                  "sparsify to --final_sparsity (default 0.9).")


def _variant(base: pipeline.PipelineConfig, name: str, **pruning) -> pipeline.PipelineConfig:
  student = dataclasses.replace(base.student, name=name,
                                pruning=dataclasses.replace(base.student.pruning, **pruning))
  return dataclasses.replace(base, student=student, qat=dataclasses.replace(base.qat, name=name),
                             export=dataclasses.replace(base.export, name=name), until="export")


def _row(workdir: str, name: str) -> dict:
  run_dir = rundir.RunDir(workdir)
  with open(run_dir.abspath(run_dir.entry("%s/%s" % (export.NAME, name))["artifacts"]["report"])) as f:
    report = json.load(f)
  with open(run_dir.abspath(run_dir.entry("student/%s" % name)["artifacts"]["metrics"])) as f:
    student = json.load(f)
  product = {m["name"]: m for m in report["models"]}[report["product"]]
  with open(run_dir.abspath(product["file"]), "rb") as f:
    blob = f.read()
  return {"student": name, "blob": blob, "int8_test_accuracy": product["test_accuracy"],
          "latency_ms": product["latency_ms"], "latency_p90_ms": product["latency_p90_ms"],
          "params": product["params"], "nonzero_params": product["nonzero_params"],
          "tflite_bytes": product["tflite_bytes"], "tflite_gzip_bytes": product["tflite_gzip_bytes"],
          "float_student_accuracy": student["test_accuracy"],
          "channels": (student.get("channels") or {}).get("layers")}


def main(argv):
  del argv
  base = kflags.pipeline_config_from_flags()
  names = {"unstructured": FLAGS.bench_prefix + "_unstructured",
           "channels": FLAGS.bench_prefix + "_channels" + FLAGS.bench_suffix}
  configs = {
      "unstructured": _variant(base, names["unstructured"]),
      "channels": _variant(base, names["channels"], structure="channels", final_sparsity=None,
                           initial_sparsity=0.0, channel_fraction=FLAGS.channel_fraction),
  }
  if FLAGS.bench_combined:
    names["channels_sparse"] = FLAGS.bench_prefix + "_channels_sparse" + FLAGS.bench_suffix
    configs["channels_sparse"] = _variant(
        base, names["channels_sparse"], structure="channels", channel_fraction=FLAGS.channel_fraction,
        final_sparsity=base.student.pruning.target)
  for c in configs.values():
    c.validate()  # both refuse bad flags before either trains
  for c in configs.values():
    pipeline.run(c, FLAGS.workdir, force=FLAGS.force)
  rows = {k: _row(FLAGS.workdir, n) for k, n in names.items()}
  blobs = {k: r.pop("blob") for k, r in rows.items()}
  # Timed again here, interleaved, so both files see the same machine load (the export stages
  # ran minutes apart on a shared machine).
  from pipelines.export import tflite as tflite_tools  # pylint: disable=g-import-not-at-top
  shape = tflite_tools.interpreter(blobs["unstructured"]).get_input_details()[0]["shape"][1:]
  timed = tflite_latency.interleaved(blobs, np.random.default_rng(0).random(shape).astype(
      np.float32))
  u, c = rows["unstructured"], rows["channels"]
  out = {"workdir": FLAGS.workdir, "rows": rows, "interleaved": timed,
         "latency_ratio_export": round(u["latency_ms"] / max(c["latency_ms"], 1e-9), 3),
         "latency_ratio": round(timed["median_ms"]["unstructured"] /
                                max(timed["median_ms"]["channels"], 1e-9), 3),
         "int8_accuracy_delta_points": round(100 * (c["int8_test_accuracy"] -
                                                   u["int8_test_accuracy"]), 3)}
  out["goal_met"] = out["latency_ratio"] >= 2.0 and out["int8_accuracy_delta_points"] >= -0.2
  print(json.dumps(out, indent=2))
  print()
  print("%-26s %9s %8s %8s %11s %12s" % ("student", "int8 acc", "params", "nonzero",
                                           "export ms", "interleaved"))
  for k, r in rows.items():
    print("%-26s %8.2f%% %8d %8d %11.4f %12.4f" % (
        r["student"], 100 * r["int8_test_accuracy"], r["params"], r["nonzero_params"],
        r["latency_ms"], timed["median_ms"][k]))
  print("latency ratio (unstructured / channels): %.2fx interleaved (%.2fx from the two exports); "
        "int8 accuracy delta %+.2f points; goal (>= 2x within 0.2 points) %s" % (
            out["latency_ratio"], out["latency_ratio_export"], out["int8_accuracy_delta_points"],
            "met" if out["goal_met"] else "NOT met"))


if __name__ == "__main__":
  cli.entry(main, "channel_latency")
