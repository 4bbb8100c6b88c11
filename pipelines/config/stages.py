"""The stage configs: what decides each stage's result. Imports no TensorFlow.

Each config's ``validate()`` makes every check its values allow on their own
(one-line :class:`ConfigError` naming the flag). Checks that read the data
source or the run directory belong to the stage (``pipelines.stages.<stage>.
validate``), which calls this first.

Stage names (the folders of the run directory and the keys of its manifest)
are defined here, so that configs, the run directory and the stages agree on
them without importing each other.
"""

import dataclasses
import os
import re
from typing import Optional, Tuple

from models import files
from models import keras3 as keras3_models
from models.spec import ModelSpec, validate_spec
from pipelines.config.base import resolved
from pipelines.config.data import DataConfig
from pipelines.config.distill import DistillConfig
from pipelines.config.errors import ConfigError
from pipelines.config.pruning import PRUNING_METHODS, PRUNING_STRUCTURES, PruningConfig
from pipelines.config.train import TrainConfig

TEACHER = "teacher"
STUDENT = "student"
QAT = "qat"
EXPORT = "export"
SWEEP = "sweep"
SEARCH = "search"
SEARCH_OBJECTIVES = ("size", "latency")  # what kdprune-search minimises
STAGES = (TEACHER, STUDENT, QAT, EXPORT)  # the pipeline's order
LOGITS_DIR = "logits"  # <workdir>/teacher/logits/: its logits, shared by the student and QAT stages
PRODUCT = "student_qat_int8"  # the exported product's file name (without .tflite)
# The reference files the export can convert beside the product (--export_baselines).
BASELINES = ("teacher_float", "student_float", "student_ptq_dynamic", "student_ptq_int8")
# The runtimes an export can target (--target), each writing its own file beside the product; their
# rules (op lists, I/O, checks) are in pipelines/export/targets.py. litert is the product itself.
TARGETS = ("litert", "edgetpu", "tflm", "xnnpack_sparse")
DEFAULT_TARGETS = ("litert",)
INT8_IO_TYPES = ("int8", "uint8")  # the integer type of --int8_io's inputs and outputs
PREPROCESSING_FILE = "preprocessing.json"  # beside the exported models: what they expect
PREPROCESSING_METADATA = "kdprune_preprocessing"  # the same record, as .tflite metadata
QAT_SCHEMES = ("prune_preserve", "default")
TEACHER_OUTPUTS_ARE = ("auto", "logits", "probabilities")
IMPORT_RECORD = "import.json"  # <workdir>/teacher/import.json: where an imported teacher lives
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str) -> None:
  """Refuses a ``--student_name`` that cannot be a folder name."""
  if not NAME_RE.match(name or ""):
    raise ConfigError("--student_name=%s must be letters, digits, '_', '.', '-'" % name)


def command(program: str, name: str) -> str:
  """``program`` as a user reruns it for student ``name`` (for messages)."""
  return program + ("" if name == "default" else " --student_name=%s" % name)


def stage_of(kind: str, name: str) -> str:
  """The manifest key of student ``name``'s ``kind`` stage: ``student/default``."""
  return "%s/%s" % (kind, name)


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """Everything that decides the teacher: data, architecture, training."""

  data: DataConfig = DataConfig()
  model: ModelSpec = ModelSpec("cnn", width=32, depth=2)
  train: TrainConfig = TrainConfig(epochs=10, learning_rate=3e-3, patience=6)
  progress: str = "auto"  # presentation only: not part of the fingerprint
  path: Optional[str] = None  # --teacher_path: import this trained teacher instead of training
  outputs_are: str = "auto"  # --teacher_outputs_are: logits, probabilities or auto (detected)
  # --allow_unsafe_deserialization: load a --teacher_path whose model holds Python (a Lambda);
  # how the file is read, not what it computes: not part of the fingerprint.
  allow_unsafe: bool = False
  # --teacher_path given again: further imported teachers, averaged with the first
  # (pipelines/train/teacher_import.py: ensemble).
  more_paths: Tuple[str, ...] = ()

  stage = TEACHER

  @property
  def paths(self) -> Tuple[str, ...]:
    """Every imported teacher's path (none: the teacher is trained)."""
    return ((self.path,) if self.path is not None else ()) + tuple(self.more_paths)

  def validate(self) -> None:
    self.data.validate()
    if self.outputs_are not in TEACHER_OUTPUTS_ARE:
      raise ConfigError("--teacher_outputs_are=%s is not one of %s" % (
          self.outputs_are, ", ".join(TEACHER_OUTPUTS_ARE)))
    if self.more_paths and self.path is None:
      raise ConfigError("more_paths are further imported teachers: give path too")
    for path in self.paths:
      if not os.path.exists(path):
        raise ConfigError("--teacher_path=%s: no such file or directory" % path)
      files.check_safe(path, "--teacher_path", self.allow_unsafe)
    if len(set(map(os.path.abspath, self.paths))) != len(self.paths):
      raise ConfigError("--teacher_path names one file twice")
    if self.path is not None:
      return  # an imported teacher is not built or trained: the model and train flags do not apply
    if self.outputs_are != "auto":
      raise ConfigError("--teacher_outputs_are is for an imported teacher (--teacher_path)")
    validate_spec(self.model, "--teacher_model")
    self.train.validate("teacher", self.data.task)

  def resolved(self) -> dict:
    if self.path is not None:  # what decides an imported teacher: the file (hashed) and the data
      out = {"data": resolved(self.data), "import": {
          "path": os.path.abspath(self.path), "outputs_are": self.outputs_are}}
      if self.more_paths:  # (one teacher keeps its fingerprint)
        out["import"]["more_paths"] = [os.path.abspath(p) for p in self.more_paths]
      return out
    return {"data": resolved(self.data), "model": resolved(self.model),
            "train": resolved(self.train)}


@dataclasses.dataclass(frozen=True)
class StudentConfig:
  """Everything that decides a student: data, architecture, training, distillation, pruning."""

  data: DataConfig = DataConfig()
  model: ModelSpec = ModelSpec("cnn", width=16, depth=2)
  train: TrainConfig = TrainConfig(epochs=15, learning_rate=3e-3, patience=5)
  distill: DistillConfig = DistillConfig()
  pruning: PruningConfig = PruningConfig()
  name: str = "default"
  progress: str = "auto"  # presentation only: not part of the fingerprint
  weights: Optional[str] = None  # --student_weights: start from these trained weights
  allow_unsafe: bool = False  # --allow_unsafe_deserialization (see TeacherConfig)
  keras: int = 2  # --student_keras: 3 builds the family with Keras 3 (pipelines/prune/keras3.py)
  path: Optional[str] = None  # --student_path: the user's student model file

  @property
  def stage(self) -> str:
    return stage_of(STUDENT, self.name)

  @property
  def keras3(self) -> bool:
    """Whether the student is a Keras 3 model (``--student_keras=3``, or a Keras 3 file)."""
    if self.path is not None:
      return keras3_models.is_keras3_file(self.path)
    return self.keras == 3

  def _check_keras(self) -> None:
    if self.keras not in (2, 3):
      raise ConfigError("--student_keras=%s must be 2 (tf_keras, tfmot) or 3" % self.keras)
    if self.path is not None:
      if not os.path.exists(self.path):
        raise ConfigError("--student_path=%s: no such file" % self.path)
      files.check_safe(self.path, "--student_path", self.allow_unsafe)
      if self.weights is not None:
        raise ConfigError("--student_weights and --student_path both give the student's weights; "
                          "pass the trained model with --student_path alone")
      if self.keras == 3 and not self.keras3:
        raise ConfigError("--student_path=%s is a tf_keras model file, not Keras 3: drop "
                          "--student_keras=3 (the file decides)" % self.path)
    if not self.keras3:
      return
    what = ("--student_path=%s (Keras 3)" % self.path) if self.path else "--student_keras=3"
    refused = [(self.pruning.structure == "channels",
                "--pruning_structure=%s" % self.pruning.structure),
               (self.weights is not None, "--student_weights (pass a trained Keras 3 model "
                                          "with --student_path)"),
               (bool(self.distill.feature_distill), "--feature_distill")]
    for bad, flag in refused:
      if bad:
        raise ConfigError("%s: %s is not built for Keras 3 students (they have magnitude and "
                          "dynamic pruning, unstructured and m:n, distillation with "
                          "--mixup); use a tf_keras student for it" % (what, flag))

  def validate(self) -> None:
    self.data.validate()
    check_name(self.name)
    validate_spec(self.model, "--student_model")
    if self.weights is not None and not os.path.exists(self.weights):
      raise ConfigError("--student_weights=%s: no such file or directory" % self.weights)
    if self.weights is not None:
      files.check_safe(self.weights, "--student_weights", self.allow_unsafe)
    self.train.validate("student", self.data.task)
    self.distill.validate()
    self.distill.check_task(self.data.task)
    self.distill.check_augment(self.train.augment, "--student_augment")
    self.pruning.validate()
    self._check_keras()

  def resolved(self) -> dict:
    out = {k: resolved(getattr(self, k)) for k in ("data", "model", "train", "distill", "pruning")}
    # Only when set: a tf_keras student's fingerprint is what it was.
    if self.path is not None:  # (its content hash is in the stage's fingerprint inputs)
      out["path"] = os.path.abspath(self.path)
      out.pop("model")
    if self.keras3:
      out["keras"] = 3
    out["distill"] = self.distill.resolved_for(self.data.task)
    out["name"] = self.name
    if self.weights is not None:  # (its content hash is in the stage's fingerprint inputs)
      out["weights"] = os.path.abspath(self.weights)
    out["pruning"]["target"] = self.pruning.target
    if self.pruning.structure != "channels":  # unused: must not force reruns
      out["pruning"].pop("channel_fraction", None)
    if self.pruning.method == "dynamic":  # revisions after the schedule, not during it (issue 17)
      out["pruning"]["mask_revisions"] = "after_schedule"
    if self.distill.enabled:
      out["distill"]["teacher_outputs"] = self.distill.resolved_teacher_outputs(
        self.train.augment != "none")
    else:  # without a teacher these do not change the result, so they must not force reruns
      out["distill"] = {"enabled": False}
      if self.distill.mixup:  # --mixup trains on mixed batches with or without a teacher
        out["distill"]["mixup"] = self.distill.mixup
    return out


@dataclasses.dataclass(frozen=True)
class QatConfig:
  """Everything that decides the QAT fine-tuning of one student."""

  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig(epochs=2, learning_rate=1e-4, patience=2)
  distill: DistillConfig = DistillConfig()
  scheme: str = "prune_preserve"
  name: str = "default"  # the student's name (--student_name)
  progress: str = "auto"

  @property
  def stage(self) -> str:
    return stage_of(QAT, self.name)

  @property
  def student_stage(self) -> str:
    return stage_of(STUDENT, self.name)

  def validate(self) -> None:
    self.data.validate()
    check_name(self.name)
    if self.scheme not in QAT_SCHEMES:
      raise ConfigError("--qat_scheme=%s is not one of %s" % (self.scheme, ", ".join(QAT_SCHEMES)))
    self.train.validate("qat", self.data.task)
    self.distill.validate()
    self.distill.check_task(self.data.task)
    self.distill.check_augment(self.train.augment, "--qat_augment")

  def resolved(self) -> dict:
    out = {"data": resolved(self.data), "train": resolved(self.train),
           "scheme": self.scheme, "name": self.name}
    if self.distill.enabled:
      out["distill"] = self.distill.resolved_for(self.data.task)
      out["distill"]["teacher_outputs"] = self.distill.resolved_teacher_outputs(
          self.train.augment != "none")
    else:
      out["distill"] = {"enabled": False}
      if self.distill.mixup:  # --mixup trains on mixed batches with or without a teacher
        out["distill"]["mixup"] = self.distill.mixup
    return out


def check_targets(targets) -> None:
  """Refuses an empty, unknown or repeated ``--target`` in one line."""
  if not targets:
    raise ConfigError("--target is empty: name one or more of %s" % ", ".join(TARGETS))
  unknown = [t for t in targets if t not in TARGETS]
  if unknown:
    raise ConfigError("--target=%s is not one of %s" % (unknown[0], ", ".join(TARGETS)))
  if len(set(targets)) != len(targets):
    raise ConfigError("--target names %s twice" % next(
        t for t in targets if list(targets).count(t) > 1))


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What decides the export of one student: its data, and how the files are measured."""

  data: DataConfig = DataConfig()
  name: str = "default"
  latency_runs: int = 200
  latency_warmup: int = 20
  representative_examples: int = 256
  int8_io: bool = False
  eval_batch_size: int = 256
  # The reference files converted and measured beside the product (BASELINES); the float
  # teacher by default (the report's comparison), the student's float and PTQ files on request.
  baselines: Tuple[str, ...] = ("teacher_float",)
  # The runtimes the export is checked against and written for (--target), in TARGETS' order;
  # litert alone is the product as it always was.
  targets: Tuple[str, ...] = DEFAULT_TARGETS
  # --int8_io=uint8: the integer inputs and outputs are uint8 (int8_io and the edgetpu file).
  int8_io_type: str = "int8"
  # The preprocessing record (preprocessing.json) also stored inside every .tflite as metadata,
  # so a file alone can be run by kdprune-predict; off: the file is smaller by the record (~400
  # bytes gzipped), for flash budgets of a few kilobytes.
  embed_preprocessing: bool = True

  @property
  def stage(self) -> str:
    return stage_of(EXPORT, self.name)

  def validate(self) -> None:
    self.data.validate()
    check_name(self.name)
    if self.latency_runs < 1:
      raise ConfigError("--latency_runs=%d must be >= 1" % self.latency_runs)
    if self.latency_warmup < 0:
      raise ConfigError("--latency_warmup=%d must be >= 0" % self.latency_warmup)
    if self.representative_examples < 1:
      raise ConfigError("--representative_examples=%d must be >= 1" %
                        self.representative_examples)
    unknown = [b for b in self.baselines if b not in BASELINES]
    if unknown:
      raise ConfigError("--export_baselines: unknown %s (choose from %s, or all, or none)" % (
          ", ".join(unknown), ", ".join(BASELINES)))
    check_targets(self.targets)
    if self.int8_io_type not in INT8_IO_TYPES:
      raise ConfigError("--int8_io=%s must be true, false, int8 or uint8" % self.int8_io_type)

  # An export made before --export_baselines, --target, --int8_io=uint8 or
  # --embed_preprocessing is not redone.
  LATER_FIELDS = ("baselines", "targets", "int8_io_type", "embed_preprocessing")

  def resolved(self) -> dict:
    out = resolved(self)
    out["data"] = resolved(self.data)  # later data fields stay out at their default
    return out


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Every stage's config, and where the pipeline stops (``until``)."""

  teacher: TeacherConfig = TeacherConfig()
  student: StudentConfig = StudentConfig()
  qat: QatConfig = QatConfig()
  export: ExportConfig = ExportConfig()
  until: str = EXPORT  # the last stage to run

  def included(self) -> Tuple[str, ...]:
    if self.until not in STAGES:
      raise ValueError("until=%r is not one of %s" % (self.until, ", ".join(STAGES)))
    return STAGES[:STAGES.index(self.until) + 1]

  def validate(self) -> None:
    included = self.included()
    for name in included:
      getattr(self, name).validate()
    names = {getattr(self, s).name for s in included if s != TEACHER}
    if len(names) > 1:
      raise ValueError("the student, QAT and export configs name different students: %s" % (
          ", ".join(sorted(names)),))


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The axes of ``kdprune-sweep``: every combination becomes one named student."""

  sparsities: Tuple[float, ...] = (0.5, 0.75, 0.9, 0.95)
  structures: Tuple[str, ...] = ("unstructured",)
  widths: Tuple[Optional[float], ...] = (None,)  # None: --student_width
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
      if s not in PRUNING_STRUCTURES:
        raise ConfigError("--structures=%s: each must be one of %s" % (
            s, ", ".join(PRUNING_STRUCTURES)))
    for w in self.widths:
      if w is not None and w < 1:
        raise ConfigError("--student_widths=%s: each must be >= 1" % w)
    for m in self.methods:
      if m is not None and m not in PRUNING_METHODS:
        raise ConfigError("--pruning_methods=%s: each must be one of %s" % (
            m, ", ".join(PRUNING_METHODS)))
    if len(set(self.methods)) != len(self.methods):
      raise ConfigError("--pruning_methods lists a method twice")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """``kdprune-search``: the budget, the space and this process's share of it.

  A *chain* is one (structure, width): its students differ in one continuous value, bisected
  (``unstructured``: the final sparsity within ``sparsity_range``; ``channels``: the channel
  fraction within ``channel_range``; ``m_by_n``: one student, at m/n). Chain ``j`` belongs to task
  ``j % num_tasks``.
  """

  max_drop: float = 0.5  # classification: accuracy points; regression: allowed MSE ratio - 1
  objective: str = "size"
  # The dual budget: the best validation figure among the int8 files of at most this many bytes
  # gzipped (0: none; --max_drop then applies).
  max_gzip_bytes: int = 0
  structures: Tuple[str, ...] = PRUNING_STRUCTURES
  widths: Tuple[Optional[int], ...] = (None,)  # None: --student_width
  sparsity_range: Tuple[float, float] = (0.5, 0.98)
  channel_range: Tuple[float, float] = (0.25, 0.75)
  tolerance: float = 0.05  # bisection stops when the bracket is this narrow
  task_index: int = 0
  num_tasks: int = 1

  # What decides the chains' results (the task split does not).
  SPACE_FIELDS = ("max_drop", "objective", "structures", "widths", "sparsity_range",
                  "channel_range", "tolerance")

  def validate(self, task: str = "classification") -> None:
    if not self.max_drop >= 0:
      raise ConfigError("--max_drop=%s must be >= 0 (%s)" % (
          self.max_drop, "an MSE ratio above the teacher's, minus 1" if task == "regression"
          else "accuracy points below the teacher"))
    if self.max_drop == 0:
      raise ConfigError("--max_drop=0 admits no student: an int8 .tflite never matches its float "
                        "teacher exactly; give a budget above 0")
    if self.objective not in SEARCH_OBJECTIVES:
      raise ConfigError("--objective=%s is not one of %s" % (
          self.objective, ", ".join(SEARCH_OBJECTIVES)))
    if self.max_gzip_bytes < 0:
      raise ConfigError("--max_gzip_bytes=%d must be >= 0 (0: no size budget)" %
                        self.max_gzip_bytes)
    if self.max_gzip_bytes and self.objective != "size":
      raise ConfigError("--objective=%s does not apply with --max_gzip_bytes: the student with "
                        "the best validation figure within the size is chosen" % self.objective)
    if not self.structures:
      raise ConfigError("--structures is empty")
    for s in self.structures:
      if s not in PRUNING_STRUCTURES:
        raise ConfigError("--structures=%s: each must be one of %s" % (
            s, ", ".join(PRUNING_STRUCTURES)))
    if len(set(self.structures)) != len(self.structures):
      raise ConfigError("--structures lists a structure twice")
    for w in self.widths:
      if w is not None and w < 1:
        raise ConfigError("--student_widths=%s: each must be >= 1" % w)
    if len(set(self.widths)) != len(self.widths):
      raise ConfigError("--student_widths lists a width twice")
    for flag, (lo, hi), low_ok in (("--search_sparsity_range", self.sparsity_range, True),
                                   ("--search_channel_range", self.channel_range, False)):
      if not ((0.0 <= lo if low_ok else 0.0 < lo) and lo <= hi < 1.0):
        raise ConfigError("%s=%s,%s must be lo,hi with %s lo <= hi < 1" % (
            flag, lo, hi, "0 <=" if low_ok else "0 <"))
    if not self.tolerance > 0:
      raise ConfigError("--search_tolerance=%s must be > 0" % self.tolerance)
    if self.num_tasks < 1:
      raise ConfigError("--num_tasks=%d must be >= 1" % self.num_tasks)
    if not 0 <= self.task_index < self.num_tasks:
      raise ConfigError("--task_index=%d must be in [0, --num_tasks=%d)" % (
          self.task_index, self.num_tasks))

  def chains(self) -> Tuple[Tuple[str, Optional[int]], ...]:
    """Every (structure, width) of the space, in a fixed order."""
    return tuple((s, w) for w in self.widths for s in self.structures)

  def my_chains(self) -> Tuple[Tuple[str, Optional[int]], ...]:
    return tuple(c for j, c in enumerate(self.chains()) if j % self.num_tasks == self.task_index)

  def space(self) -> dict:
    out = {k: getattr(self, k) for k in self.SPACE_FIELDS}
    if self.max_gzip_bytes:  # (left out when unset: the searches before it keep their chains)
      out.update(max_gzip_bytes=self.max_gzip_bytes, max_drop=None)
    return out
