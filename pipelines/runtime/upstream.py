"""Finding what earlier stages left in the run directory, and checking it before use.

A stage never imports another stage to find its inputs: it asks here. Every
look-up that can fail raises a one-line :class:`ConfigError` saying which
command to run, before any work.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from pipelines.config import base as config_base
from pipelines.config.data import DataConfig
from pipelines.config.errors import ConfigError
from pipelines.config.stages import LOGITS_DIR, QAT, STUDENT, TEACHER, command, stage_of
from pipelines.data import sources
from pipelines.runtime import rundir


def finished_entry(workdir: str, stage: str, program: str, alternative: str = "") -> dict:
  """The manifest entry of a finished ``stage`` whose model exists, or a ConfigError naming
  ``program``."""
  run_dir = rundir.RunDir(workdir)
  entry = run_dir.entry(stage)
  model = (entry or {}).get("artifacts", {}).get("model", os.path.join(stage, "model.keras"))
  if not entry or entry.get("status") != "done" or not os.path.exists(run_dir.abspath(model)):
    raise ConfigError("no finished %s in %s (%s); run %s --workdir=%s first%s" % (
        stage, run_dir.workdir, model, program, workdir, (", " + alternative) if alternative else ""))
  for path, problem in run_dir.artifact_problems(stage):
    raise ConfigError("%s is unusable (%s); rerun %s --workdir=%s --force" % (
        path, problem, program, workdir))
  return entry


def teacher_entry(workdir: str) -> dict:
  """The manifest entry of a finished teacher in ``workdir``, or a ConfigError saying what to run."""
  return finished_entry(workdir, TEACHER, "kdprune-teacher", "or pass --distill=false")


def student_entry(workdir: str, name: str) -> dict:
  """The manifest entry of finished student ``name``."""
  return finished_entry(workdir, stage_of(STUDENT, name), command("kdprune-student", name))


def qat_entry(workdir: str, name: str) -> dict:
  """The manifest entry of the finished QAT run of student ``name``."""
  return finished_entry(workdir, stage_of(QAT, name), command("kdprune-qat", name))


def export_inputs(workdir: str, name: str) -> dict:
  """Manifest entries of the QAT run, the student and (when there is one) the teacher."""
  entries = {"qat": qat_entry(workdir, name), "student": student_entry(workdir, name)}
  teacher = rundir.RunDir(workdir).entry(TEACHER)
  if teacher and teacher.get("status") == "done":
    entries["teacher"] = teacher
  return entries


def identity(entry: dict) -> dict:
  """What of an upstream entry goes into a fingerprint: its fingerprint and when it finished."""
  return {"fingerprint": entry.get("fingerprint"), "finished": entry.get("finished")}


def teacher_inputs(workdir: str, data: DataConfig) -> dict:
  """The finished teacher's identity for a distilling stage's fingerprint, after checking it was
  trained on ``data``'s inputs and classes."""
  entry = teacher_entry(workdir)
  check_data_matches(workdir, TEACHER, data, "kdprune-teacher")
  return identity(entry)


def check_data_matches(workdir: str, stage: str, data: DataConfig, program: str) -> None:
  """Refuses, before any work, a finished ``stage`` whose model's inputs or classes differ from
  those of ``data`` (read from the stage's metrics.json and the data source; no TensorFlow)."""
  run_dir = rundir.RunDir(workdir)
  entry = run_dir.entry(stage) or {}
  path = entry.get("artifacts", {}).get("metrics")
  if not path:
    return
  with open(run_dir.abspath(path)) as f:
    seen = json.load(f).get("data") or {}
  if "input_shape" not in seen:
    return
  if seen.get("task", data.task) != data.task:  # metrics.json has said so since --task came
    raise ConfigError("the %s in %s was trained for --task=%s, not --task=%s; rerun %s --force "
                      "with --task=%s, or pass --task=%s" % (
                          stage, run_dir.stage_dir(stage), seen["task"], data.task, program,
                          data.task, seen["task"]))
  _check_preparation_matches(run_dir, stage, entry, data, program,
                             carved=str(seen.get("validation_source", "")).startswith("carved"))
  source = sources.resolve(data)
  trained = (tuple(seen["input_shape"]), int(seen["num_classes"]))
  if trained != (tuple(source.input_shape), int(source.num_classes)):
    raise ConfigError("the %s in %s was trained on %s inputs %s with %d classes, but --dataset=%s "
                      "gives %s with %d classes; rerun %s --force on this data, or pass the "
                      "--dataset it was trained on" % (
                          stage, run_dir.stage_dir(stage), seen.get("name", "?"), trained[0],
                          trained[1], data.dataset, tuple(source.input_shape), source.num_classes,
                          program))


def _check_preparation_matches(run_dir, stage: str, entry: dict, data: DataConfig, program: str,
                               carved: bool) -> None:
  """Refuses data flags that would prepare the examples unlike ``stage``'s training: another
  ``--normalization`` (the model would see inputs scaled unlike its training; another
  ``--image_size`` is refused by the input shapes :func:`check_data_matches` compares), and, where
  validation was carved from train, another ``--validation_fraction`` or ``--seed`` (this stage's
  validation split could hold ``stage``'s training examples). A stage's own ``--<stage>_seed``
  changes its initialisation and order only, and is not checked."""
  path = entry.get("artifacts", {}).get("config")
  if not path:
    return
  try:
    with open(run_dir.abspath(path)) as f:
      trained = json.load(f).get("data") or {}
  except (OSError, ValueError):
    return  # an unreadable config.json is refused where artifacts are checked
  fields = ["normalization"] + (["validation_fraction", "seed"] if carved else [])
  defaults = DataConfig()
  for field in fields:
    then, now = trained.get(field, getattr(defaults, field)), getattr(data, field)
    if then == now:
      continue
    if field == "normalization":
      why = "the %s would see inputs scaled unlike its training" % stage
    else:
      why = ("--validation_fraction and --seed carve the validation split from train: it would "
             "hold examples the %s trained on" % stage)
      if field == "seed":
        why += " (--student_seed changes a student's initialisation and order only)"
    raise ConfigError("--%s=%s differs from the %s's --%s=%s (%s): %s; pass --%s=%s, or rerun %s "
                      "--force with --%s=%s" % (
                          field, now, stage, field, then, run_dir.abspath(path), why, field, then,
                          program, field, now))


def teacher_logits_path(workdir: str, data: DataConfig) -> str:
  """Where the finished teacher's logits over ``data``'s training split are kept between stages:
  a store folder (:mod:`pipelines.train.teacher_store`).

  Keyed by the teacher run and the data config (which decides the split and
  its order); the teacher stage clears the folder when it trains again.
  """
  entry = teacher_entry(workdir)
  examples = config_base.resolved(data)
  for field in ("cache", "cache_mode", "cache_budget_mb"):  # how examples are cached, not which
    examples.pop(field, None)
  key = rundir.fingerprint({"teacher": entry.get("fingerprint"), "finished": entry.get("finished"),
                            "data": examples})[:16]
  return os.path.join(rundir.RunDir(workdir).stage_dir(TEACHER), LOGITS_DIR, key)


def qat_files(workdir: str, name: str) -> dict:
  """What rebuilding student ``name``'s QAT model needs: ``{"student_model", "scheme",
  "weights"}`` (absolute paths), refused if the student was retrained after QAT ran."""
  run_dir = rundir.RunDir(workdir)
  stage = stage_of(QAT, name)
  entry = finished_entry(workdir, stage, "kdprune-qat")
  s_entry = student_entry(workdir, name)
  if entry["metrics"].get("student_finished") != s_entry.get("finished"):
    raise ConfigError("the student %s was retrained after %s; rerun kdprune-qat --workdir=%s" % (
        s_entry["artifacts"]["model"], stage, workdir))
  with open(run_dir.abspath(entry["artifacts"]["config"])) as f:
    scheme = json.load(f)["scheme"]
  return {"student_model": run_dir.abspath(s_entry["artifacts"]["model"]), "scheme": scheme,
          "weights": run_dir.abspath(entry["artifacts"]["model"])}


@dataclasses.dataclass(frozen=True)
class StudentRecord:
  """What a finished student stage hands to QAT and the export, read once from its manifest
  entry, ``metrics.json`` and ``config.json`` (:func:`student_record`)."""

  stage: str
  model_path: str  # the stripped student (absolute)
  finished: Optional[str]  # when it finished (a later QAT run refuses a retrained student)
  metrics: Dict[str, Any]  # the manifest's metrics (test/val figures)
  plan: Dict[str, str]  # layer -> "prune", or why it was kept dense
  layers: Dict[str, dict]  # pruned layer -> {"weights", "zeros", "sparsity", "target"}
  target_sparsity: float
  sparsity: float
  m_by_n: Optional[Tuple[int, int]]  # (m, n) when the structure is m:n
  distilled: bool

  def layer_targets(self) -> Dict[str, float]:
    """Each pruned layer's own target sparsity (the student's target where it set none)."""
    return {name: float(layer.get("target", self.target_sparsity))
            for name, layer in self.layers.items()}

  @property
  def pruned_layers(self) -> List[str]:
    return [name for name, why in self.plan.items() if why == "prune"]


def student_record(workdir: str, name: str) -> StudentRecord:
  """The finished student ``name`` of ``workdir`` (a ConfigError naming the command to run when
  there is none)."""
  entry = student_entry(workdir, name)
  run_dir = rundir.RunDir(workdir)
  with open(run_dir.abspath(entry["artifacts"]["metrics"])) as f:
    metrics = json.load(f)
  with open(run_dir.abspath(entry["artifacts"]["config"])) as f:
    pruning = json.load(f)["pruning"]
  m_by_n = tuple(pruning["m_by_n"]) if pruning.get("structure") == "m_by_n" else None
  return StudentRecord(
      stage=stage_of(STUDENT, name), model_path=run_dir.abspath(entry["artifacts"]["model"]),
      finished=entry.get("finished"), metrics=dict(entry.get("metrics", {})),
      plan=dict(metrics["pruning"]["plan"]), layers=dict(metrics["pruning"]["layers"]),
      target_sparsity=float(metrics["target_sparsity"]), sparsity=float(metrics["sparsity"]),
      m_by_n=m_by_n, distilled=bool(metrics.get("distill")))
