"""kdprune-sweep: one teacher, many students, each through student -> QAT -> export; the Pareto front.

  kdprune-sweep --workdir=runs/sweep --sparsities=0.5,0.75,0.9,0.95
  kdprune-sweep --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist48 \
      --sparsities=0.9,0.95 --structures=unstructured,m_by_n --student_widths=12,16
  kdprune-sweep --workdir=runs/sweep --sparsities=0.9,0.95 --pruning_methods=magnitude,dynamic

The teacher trains once (or is reused); every combination of sparsity,
structure, student width and pruning method becomes a named student
(``s0.900_unstructured_w16``; ``_dynamic`` appended for dynamic pruning)
that runs through the pipeline's student, QAT and export stages with the
other flags as given. Finished stages are skipped, like the pipeline;
``--force`` reruns the teacher once and then every student's stages. For
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
from typing import List, Tuple

from pipelines.config import EXPORT, PipelineConfig, SweepConfig, stage_of, tasks
from pipelines.config import SWEEP as NAME
from pipelines.export import pareto as pareto_lib
from pipelines.runtime import distribute, rundir
from pipelines.stages import pipeline

# The stage kinds of one swept student (the teacher is shared).
STUDENT_KINDS = ("student", "qat", "export")

__all__ = ["NAME", "SweepConfig", "students", "student_name", "pipeline_for", "validate", "run"]


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
          out.append((student_name(base, structure, w, s, method=effective),
                      {"sparsity": s, "structure": structure, "width": width,
                       "method": effective}))
  return out


def student_name(base, structure: str, width, sparsity=None, channel_fraction=None,
                 method=None) -> str:
  """``s0.900_unstructured_w16``, ``m_by_n_2-4_w16``, ``channels_0.50_w16`` (``_dynamic``
  appended for dynamic pruning); ``base`` is the student config (its m:n and channel fraction)."""
  if structure == "unstructured":
    name = "s%.3f_%s_w%s" % (sparsity, structure, width)
  elif structure == "channels":
    name = "channels_%.2f_w%s" % (
        base.pruning.channel_fraction if channel_fraction is None else channel_fraction, width)
  else:
    name = "%s_%d-%d_w%s" % (structure, base.pruning.m_by_n[0], base.pruning.m_by_n[1], width)
  return name + ("_dynamic" if (method or base.pruning.method) == "dynamic" else "")


def pipeline_for(config, name: str, spec: dict):
  """The pipeline config of one swept student (teacher shared)."""
  student = config.student
  pruning = dataclasses.replace(student.pruning, structure=spec["structure"],
                                final_sparsity=spec["sparsity"],
                                method=spec.get("method") or student.pruning.method,
                                channel_fraction=spec.get("channel_fraction")
                                or student.pruning.channel_fraction)
  model = student.model if spec["width"] is None else dataclasses.replace(
      student.model, width=spec["width"])
  return dataclasses.replace(
      config, until="export",
      student=dataclasses.replace(student, name=name, pruning=pruning, model=model),
      qat=dataclasses.replace(config.qat, name=name),
      export=dataclasses.replace(config.export, name=name))


def validate(config: PipelineConfig, sweep: SweepConfig) -> List[Tuple[str, dict, PipelineConfig]]:
  """Checks the sweep and every student's pipeline; returns ``[(name, spec, pipeline config)]``."""
  sweep.validate()
  out = [(name, spec, pipeline_for(config, name, spec))
         for name, spec in students(config.student, sweep)]
  for _, _, c in out:
    pipeline.validate(c)
  return out


def read_report(workdir: str, name: str) -> dict:
  """Student ``name``'s export report (``export/<name>/report.json``)."""
  with open(os.path.join(rundir.RunDir(workdir).stage_dir(stage_of(EXPORT, name)),
                         "report.json")) as f:
    return json.load(f)


def student_entry(report: dict, name: str, spec: dict, c: PipelineConfig, key: str) -> dict:
  """One student's figures from its export report (``key``: ``test_accuracy`` or ``test_mse``),
  measured on its int8 .tflite."""
  metric = key[len("test_"):]
  models = {m["name"]: m for m in report["models"]}
  product = models[report["product"]]
  return {
      "student": name, "structure": spec["structure"], "method": c.student.pruning.method,
      "target_sparsity": (c.student.pruning.target),
      "width": c.student.model.width,
      key: product[key], "tflite_bytes": product["tflite_bytes"],
      "tflite_gzip_bytes": product["tflite_gzip_bytes"], "latency_ms": product["latency_ms"],
      "sparsity": product["sparsity"], "params": product["params"],
      "nonzero_params": product["nonzero_params"],
      # The float pruned student: its .tflite when the export measured it, else its Keras figure.
      "float_student_" + metric: models["student_float"][key] if "student_float" in models
      else next(s[key] for s in report["story"] if s["what"].startswith("pruned student")),
      "report": os.path.join("export", name, "report.json"),
  }


def run(config: PipelineConfig, sweep: SweepConfig, workdir: str, force: bool = False,
        log=None) -> dict:
  """Runs every student of the sweep; writes and returns ``sweep.json``'s content."""
  configs_ = validate(config, sweep)  # every student's flags, before the teacher trains
  start = time.time()
  metric, label, higher = tasks.headline(config.student.data.task)
  key = "test_" + metric
  entries, teacher = [], None
  for i, (name, spec, c) in enumerate(configs_):
    # --force retrains the shared teacher once, with the first student; the later students are
    # forced alone, so that every point of the front learnt from the same teacher run.
    pipeline.run(c, workdir, force=force if i == 0 else (STUDENT_KINDS if force else False),
                 log=log)
    report = read_report(workdir, name)
    teacher = {m["name"]: m for m in report["models"]}.get("teacher_float", teacher)
    entries.append(student_entry(report, name, spec, c, key))
  pareto_lib.pareto(entries, key, higher)
  out = {"workdir": rundir.RunDir(workdir).workdir, "students": entries,
         "score": {"key": key, "label": label, "higher_is_better": higher},
         "teacher": ({k: teacher[k] for k in (key, "tflite_gzip_bytes", "latency_ms")}
                     if teacher else None),
         "wall_seconds": round(time.time() - start, 1)}
  directory = distribute.output_dir(rundir.RunDir(workdir).stage_dir(NAME))
  os.makedirs(directory, exist_ok=True)
  rundir.write_json(os.path.join(directory, "sweep.json"), out)
  rundir.atomic_write(os.path.join(directory, "sweep.md"), pareto_lib.markdown(out))
  pareto_lib.plot(out, os.path.join(directory, "pareto.png"))
  return out
