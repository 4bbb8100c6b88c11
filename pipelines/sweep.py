"""kdprune-sweep: one teacher, many students, each through student -> QAT -> export; the Pareto front.

  kdprune-sweep --workdir=runs/sweep --sparsities=0.5,0.75,0.9,0.95
  kdprune-sweep --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist48 \
      --sparsities=0.9,0.95 --structures=unstructured,m_by_n --student_widths=12,16
  kdprune-sweep --workdir=runs/sweep --sparsities=0.9,0.95 --pruning_methods=magnitude,dynamic

The teacher trains once (or is reused); every combination of sparsity,
structure, student width and pruning method becomes a named student
(``s0.900_unstructured_w16``; ``_dynamic`` appended for dynamic pruning)
that runs through the pipeline's student, QAT and export stages with the
other flags as given. Finished stages are skipped, like the pipeline. For
``m_by_n`` the sparsity is m/n, so that structure adds one student per width.

Writes ``<workdir>/sweep/``: ``sweep.json`` (one entry per student, measured
on its int8 .tflite, with ``pareto: true`` on the accuracy/size front),
``sweep.md`` and ``pareto.png`` (int8 test accuracy, or MSE for regression, against gzip size, the
front joined, the float teacher as reference). Every student's HParams
session sits under the same logdir, so TensorBoard's HParams dashboard shows
them side by side.
"""

import dataclasses
import json
import os
import time
from typing import List, Optional, Tuple

from pipelines import configs, rundir
from pipelines.errors import ConfigError

NAME = "sweep"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  sparsities: Tuple[float, ...] = (0.5, 0.75, 0.9, 0.95)
  structures: Tuple[str, ...] = ("unstructured",)
  widths: Tuple[Optional[int], ...] = (None,)  # None: --student_width
  methods: Tuple[Optional[str], ...] = (None,)  # None: --pruning_method

  def validate(self) -> None:
    if not self.sparsities and "unstructured" in self.structures:
      raise ConfigError("--sparsities is empty")
    for s in self.sparsities:
      if not 0.0 <= s < 1.0:
        raise ConfigError("--sparsities=%s: each must be in [0, 1)" % s)
    if len(set(self.sparsities)) != len(self.sparsities):
      raise ConfigError("--sparsities lists a value twice")
    for s in self.structures:
      if s not in configs.PRUNING_STRUCTURES:
        raise ConfigError("--structures=%s: each must be one of %s" % (
            s, ", ".join(configs.PRUNING_STRUCTURES)))
    for w in self.widths:
      if w is not None and w < 1:
        raise ConfigError("--student_widths=%s: each must be >= 1" % w)
    for m in self.methods:
      if m is not None and m not in configs.PRUNING_METHODS:
        raise ConfigError("--pruning_methods=%s: each must be one of %s" % (
            m, ", ".join(configs.PRUNING_METHODS)))
    if len(set(self.methods)) != len(self.methods):
      raise ConfigError("--pruning_methods lists a method twice")


def students(base, sweep: SweepConfig) -> List[Tuple[str, dict]]:
  """``[(name, {"sparsity", "structure", "width", "method"})]`` for every combination
  (dynamic pruning only for unstructured students: an m:n pattern has nothing to regrow)."""
  out = []
  for width in sweep.widths:
    w = width if width is not None else base.model.width
    for structure in sweep.structures:
      values = sweep.sparsities if structure == "unstructured" else (None,)
      for s in values:
        for method in sweep.methods:
          effective = method or base.pruning.method
          if structure != "unstructured" and effective == "dynamic":
            continue
          if structure == "unstructured":
            name = "s%.3f_%s_w%s" % (s, structure, w)
          elif structure == "channels":
            name = "channels_%.2f_w%s" % (base.pruning.channel_fraction, w)
          else:
            name = "%s_%d-%d_w%s" % (structure, base.pruning.m_by_n[0], base.pruning.m_by_n[1],
                                     w)
          if effective == "dynamic":
            name += "_dynamic"
          out.append((name, {"sparsity": s, "structure": structure, "width": width,
                             "method": effective}))
  return out


def pipeline_for(config, name: str, spec: dict):
  """The pipeline config of one swept student (teacher shared)."""
  student = config.student
  pruning = dataclasses.replace(student.pruning, structure=spec["structure"],
                                final_sparsity=spec["sparsity"],
                                method=spec.get("method") or student.pruning.method)
  model = student.model if spec["width"] is None else dataclasses.replace(
      student.model, width=spec["width"])
  return dataclasses.replace(
      config, until="export",
      student=dataclasses.replace(student, name=name, pruning=pruning, model=model),
      qat=dataclasses.replace(config.qat, name=name),
      export=dataclasses.replace(config.export, name=name))


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


def run(config, sweep: SweepConfig, workdir: str, force: bool = False, log=print) -> dict:
  """Runs every student of the sweep; writes and returns ``sweep.json``'s content."""
  from pipelines import pipeline  # pylint: disable=g-import-not-at-top
  sweep.validate()
  combos = students(config.student, sweep)
  configs_ = [(name, spec, pipeline_for(config, name, spec)) for name, spec in combos]
  for _, _, c in configs_:  # every student's flags are checked before the teacher trains
    c.validate()
  start = time.time()
  metric, label, higher = configs.headline(config.student.data.task)
  key = "test_" + metric
  entries, teacher = [], None
  for name, spec, c in configs_:
    pipeline.run(c, workdir, force=force, log=log)
    with open(os.path.join(rundir.RunDir(workdir).stage_dir("export/" + name),
                           "report.json")) as f:
      report = json.load(f)
    models = {m["name"]: m for m in report["models"]}
    product = models[report["product"]]
    teacher = models.get("teacher_float", teacher)
    entries.append({
        "student": name, "structure": spec["structure"], "method": c.student.pruning.method,
        "target_sparsity": (c.student.pruning.target),
        "width": c.student.model.width,
        key: product[key], "tflite_bytes": product["tflite_bytes"],
        "tflite_gzip_bytes": product["tflite_gzip_bytes"], "latency_ms": product["latency_ms"],
        "sparsity": product["sparsity"], "params": product["params"],
        "nonzero_params": product["nonzero_params"],
        "float_student_" + metric: models["student_float"][key],
        "report": os.path.join("export", name, "report.json"),
    })
  pareto(entries, key, higher)
  out = {"workdir": rundir.RunDir(workdir).workdir, "students": entries,
         "score": {"key": key, "label": label, "higher_is_better": higher},
         "teacher": ({k: teacher[k] for k in (key, "tflite_gzip_bytes", "latency_ms")}
                     if teacher else None),
         "wall_seconds": round(time.time() - start, 1)}
  from pipelines import distribute  # pylint: disable=g-import-not-at-top
  directory = distribute.output_dir(rundir.RunDir(workdir).stage_dir(NAME))
  os.makedirs(directory, exist_ok=True)
  rundir.write_json(os.path.join(directory, "sweep.json"), out)
  rundir.atomic_write(os.path.join(directory, "sweep.md"), markdown(out))
  plot(out, os.path.join(directory, "pareto.png"))
  return out


def _score(out: dict):
  """``(key, label, format)`` of the sweep's headline: accuracy, or MSE for regression."""
  score = out.get("score") or {"key": "test_accuracy", "label": "accuracy"}
  if score["key"] == "test_accuracy":
    return score["key"], "acc", lambda v: "%.2f%%" % (100 * v)
  return score["key"], score["label"], lambda v: "%.5g" % v


def markdown(out: dict) -> str:
  from pipelines import report  # pylint: disable=g-import-not-at-top
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
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  key, label, _ = _score(out)
  scale = 100 if key == "test_accuracy" else 1
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
  ax.set_ylabel("test %s (TFLite interpreter)" % ("accuracy, %" if scale == 100 else label))
  ax.set_title("kdprune sweep: %s vs size" % ("accuracy" if scale == 100 else label))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  with rundir.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png")
  plt.close(fig)


# ----------------------------------------------------------------------------
# Entry point.


def config_from_flags() -> SweepConfig:
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  f = kflags.FLAGS

  def floats(values, flag):
    try:
      return tuple(float(v) for v in values)
    except ValueError:
      raise ConfigError("--%s=%s must be numbers" % (flag, ",".join(values))) from None
  widths = tuple(int(w) for w in floats(f.student_widths, "student_widths")) or (None,)
  return SweepConfig(sparsities=floats(f.sparsities, "sparsities"),
                     structures=tuple(f.structures), widths=widths,
                     methods=tuple(f.pruning_methods) or (None,))


def main(argv):
  del argv
  from pipelines import distribute  # pylint: disable=g-import-not-at-top
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  from pipelines import pipeline  # pylint: disable=g-import-not-at-top
  base = pipeline.config_from_flags()
  sweep = config_from_flags()

  def validate():
    sweep.validate()
    for name, spec in students(base.student, sweep):
      pipeline_for(base, name, spec).validate()
  distribute.setup(kflags.FLAGS.strategy, validate)
  out = run(base, sweep, kflags.FLAGS.workdir, force=kflags.FLAGS.force)
  if distribute.is_chief():
    print()
    print(markdown(out))
    print("sweep -> %s" % os.path.join(out["workdir"], NAME))


def entry_point():
  from pipelines import cli  # pylint: disable=g-import-not-at-top
  cli.entry(main, "kdprune-sweep")


if __name__ == "__main__":
  entry_point()
