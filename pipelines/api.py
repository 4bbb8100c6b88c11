"""kdprune from Python: run the pipeline or one stage from configs, or distil a model you have.

Three entry points, re-exported by :mod:`pipelines`:

* :func:`run_pipeline` runs teacher -> student -> QAT -> export through a run
  directory, exactly as ``kdprune-pipeline`` does (finished stages are skipped);
* :func:`run_stage` runs one stage from its config (``TeacherConfig``,
  ``StudentConfig``, ``QatConfig`` or ``ExportConfig``);
* :func:`distill` takes a **trained tf_keras teacher object** and ``tf.data``
  datasets you already have, and returns the pruned student, its QAT model, the
  int8 ``.tflite`` and every figure, measured on the exported file. It works in
  a run directory too (a temporary one unless you pass ``workdir``), so the
  result is the same as the command-line pipeline's and can be resumed.

Example (a notebook cell; the README has a runnable one)::

  import pipelines
  result = pipelines.distill(teacher, train_ds, test_ds, final_sparsity=0.8)
  print(result.metrics["int8_test_accuracy"], result.tflite_path)

Progress lines go to the ``kdprune`` logger (:mod:`pipelines.runtime.progress`);
``logging.getLogger("kdprune").setLevel(logging.WARNING)`` silences them.
"""

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Union

import numpy as np

from models.compat import keras
from models.spec import ModelSpec
from pipelines.config import (
    EXPORT, QAT, STUDENT, TEACHER, DataConfig, DistillConfig, ExportConfig, PipelineConfig,
    PruningConfig, QatConfig, StudentConfig, TeacherConfig, TrainConfig, stage_of)
from pipelines.config.errors import ConfigError
from pipelines.runtime import execute, rundir
from pipelines.runtime.execute import StageOutcome
from pipelines.data import bundle as data_lib
from pipelines.export import tflite as tflite_tools
from pipelines.stages import pipeline, qat, registry
from pipelines.train import distill as distill_lib

__all__ = ["run_pipeline", "run_stage", "distill", "DistillResult"]


def run_pipeline(config: PipelineConfig, workdir: str, force: bool = False) -> List[StageOutcome]:
  """Runs every stage up to ``config.until`` in ``workdir``; returns one outcome per stage.

  Each outcome's ``entry`` is the stage's manifest entry (``metrics``,
  ``artifacts`` relative to ``workdir``, ``config``, timings). Raises
  :class:`ConfigError` before any work for a bad config.
  """
  return pipeline.run(config, workdir, force=force)


def run_stage(config, workdir: str, force: bool = False) -> StageOutcome:
  """Runs the one stage ``config`` describes (skipped if done with the same config)."""
  try:
    stage = registry.for_config(config)
  except TypeError as e:
    raise TypeError("run_stage takes a TeacherConfig, StudentConfig, QatConfig or "
                    "ExportConfig: %s" % e) from None
  return execute.run_stage(stage, config, workdir, force=force)


@dataclasses.dataclass
class DistillResult:
  """What :func:`distill` returns.

  Attributes:
    student: the pruned, stripped float student (tf_keras; zeros in its kernels).
    qat_model: the quantization-aware student the int8 file was converted from.
    tflite_path: the int8 ``.tflite`` (int8 weights and activations, float32 in/out).
    saved_model_path: the QAT student as a SavedModel.
    metrics: the headline figures: ``teacher_test_accuracy``, ``student_test_accuracy``
      (float student), ``qat_test_accuracy``, ``int8_test_accuracy`` (measured with the TFLite
      interpreter on the file), ``sparsity`` (in the file), ``int8_gzip_bytes``,
      ``teacher_gzip_bytes``, ``int8_latency_ms``; ``*_mse`` instead of accuracies for
      regression.
    report: the export report (``report.json``'s content).
    workdir: the run directory (removed with the object only if it was temporary and
      ``keep_workdir`` was false: then the paths above are gone after :meth:`cleanup`).
  """

  student: Any
  qat_model: Any
  tflite_path: str
  saved_model_path: str
  metrics: Dict[str, float]
  report: dict
  workdir: str
  _tmp: Optional[tempfile.TemporaryDirectory] = None

  def cleanup(self) -> None:
    """Removes a temporary run directory (and the files the paths point at)."""
    if self._tmp is not None:
      self._tmp.cleanup()
      self._tmp = None


def distill(teacher_model, train, test, validation=None, *,
            student: Union[ModelSpec, str] = ModelSpec("cnn", width=16, depth=2),
            final_sparsity: Optional[float] = 0.9,
            pruning: Optional[PruningConfig] = None,
            epochs: int = 10, qat_epochs: int = 2, batch_size: int = 64,
            learning_rate: float = 2e-3, temperature: float = 4.0, alpha: float = 0.1,
            task: str = "classification", validation_fraction: float = 0.1, seed: int = 0,
            workdir: Optional[str] = None, name: str = "default",
            latency_runs: int = 50) -> DistillResult:
  """Distils ``teacher_model`` into a pruned int8 student on datasets you already have.

  Args:
    teacher_model: a trained **tf_keras** model (Functional, Sequential or subclassed: the
      teacher is only run, never pruned), one output unit per class (or one per target for
      ``task="regression"``): logits, or probabilities (a softmax head, detected: their
      logarithm is distilled). It is saved in the run directory as a SavedModel and imported as
      ``kdprune-teacher --teacher_path`` imports one.
    train, test, validation: ``tf.data.Dataset``s of ``(x, y)``, batched or not (batched for a
      subclassed teacher, which knows no input shape), already
      preprocessed the way the teacher expects (kdprune applies no normalisation to them);
      ``y`` holds integer class ids (or real targets). Without ``validation`` a seeded
      ``validation_fraction`` of ``train`` is held out.
    student: a family (``ModelSpec("cnn", width=16)``, ``ModelSpec("mlp", width=64)``) or a
      ``"package.module:function"`` builder returning a Functional tf_keras model.
    final_sparsity: the sparsity every pruned layer ends at; ``pruning`` (a
      :class:`PruningConfig`) for full control (2:4, dynamic, channels, ...).
    epochs, qat_epochs, batch_size, learning_rate: the student's and QAT's training.
    temperature, alpha: the distillation loss.
    workdir: a run directory to keep everything in (rerunning with the same arguments skips
      what is done); ``None``: a temporary one, removed by :meth:`DistillResult.cleanup`.
    name: the student's name in the run directory.
    latency_runs: timed batch-1 invokes per ``.tflite`` in the report.

  Returns:
    A :class:`DistillResult`. The datasets are written once to ``<workdir>/data.npz`` (so this
    is for data that fits in memory) and the stages run as ``kdprune-pipeline`` would.

  Raises:
    ConfigError: a bad argument, a teacher that does not fit the data, or an empty dataset,
      before any training.
  """
  if not isinstance(teacher_model, keras.Model):
    raise ConfigError("distill: teacher_model must be a tf_keras model (tf_keras.Model or "
                      "models.compat.keras), not %s" % type(teacher_model).__name__)
  spec = ModelSpec(student) if isinstance(student, str) else student
  tmp = None
  if workdir is None:
    tmp = tempfile.TemporaryDirectory(prefix="kdprune-")
    workdir = tmp.name
  os.makedirs(workdir, exist_ok=True)
  in_shape = _known_input_shape(teacher_model)
  arrays = {}
  for split, ds in (("train", train), ("test", test), ("val", validation)):
    if ds is not None:
      arrays["x_" + split], arrays["y_" + split] = _materialize(ds, in_shape, split)
  data_path = os.path.join(workdir, "data.npz")
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  # Written only when the data changed: the file's size and time are in every stage's
  # fingerprint, so a rewrite of the same data would rerun every stage.
  if not os.path.isfile(data_path) or rundir.content_hash(data_path) != hashlib.sha256(
      buffer.getvalue()).hexdigest():
    with rundir.atomic_path(data_path) as tmp_path:
      with open(tmp_path, "wb") as f:
        f.write(buffer.getvalue())
  data = DataConfig(dataset="npz:" + data_path, normalization="none", task=task,
                    validation_fraction=validation_fraction, seed=seed)
  distill_config = DistillConfig(temperature=temperature, alpha=alpha)
  if pruning is None:
    pruning = PruningConfig(final_sparsity=final_sparsity)
  config = PipelineConfig(
      teacher=TeacherConfig(data=data),
      student=StudentConfig(
          data=data, model=spec, distill=distill_config, pruning=pruning, name=name,
          train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                            patience=0), progress="none"),
      qat=QatConfig(data=data, distill=distill_config, name=name, progress="none",
                    train=TrainConfig(epochs=qat_epochs, batch_size=batch_size,
                                      learning_rate=1e-4, patience=0)),
      export=ExportConfig(data=data, name=name, latency_runs=latency_runs, latency_warmup=5))
  for kind in (STUDENT, QAT, EXPORT):  # every check before any work
    registry.STAGES[kind].validate(getattr(config, kind))
  teacher_config = _adopt_teacher(teacher_model, workdir, data)
  run_stage(teacher_config, workdir)  # imported as --teacher_path imports: checked, evaluated
  for kind in (STUDENT, QAT, EXPORT):
    stage_config = getattr(config, kind)
    run_stage(stage_config, workdir)
  return _result(workdir, name, task, tmp)


def _known_input_shape(model):
  """The example shape a model was built for, or None (a subclassed model knows none: its
  datasets must then be batched)."""
  try:
    return tuple(int(d) for d in model.input_shape[1:])
  except (AttributeError, ValueError, TypeError):
    return None


def _materialize(ds, in_shape, split: str):
  """``(x, y)`` numpy arrays of a dataset of ``(x, y)``, batched or not (batched when
  ``in_shape`` is None)."""
  xs, ys = [], []
  for element in ds:
    if not isinstance(element, (tuple, list)) or len(element) != 2:
      raise ConfigError("distill: the %s dataset must yield (x, y) pairs" % split)
    x, y = (np.asarray(t) for t in element)
    if in_shape is None:
      in_shape = tuple(x.shape[1:])  # the first batch's examples
    if x.shape == in_shape:  # one example
      x, y = x[None], np.reshape(y, (1,) + y.shape)
    elif x.shape[1:] != in_shape:
      raise ConfigError("distill: the %s dataset yields inputs of shape %s; the teacher takes %s "
                        "(or batches of it)" % (split, x.shape, in_shape))
    xs.append(x)
    ys.append(y)
  if not xs:
    raise ConfigError("distill: the %s dataset is empty" % split)
  return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


TEACHER_MODEL_DIR = "teacher_model"  # distill()'s teacher, saved in the run directory


def _adopt_teacher(teacher_model, workdir: str, data: DataConfig) -> TeacherConfig:
  """The teacher stage's config that imports ``teacher_model`` as ``--teacher_path`` imports a
  file: the model is saved as a SavedModel (its serving function: Functional, Sequential and
  subclassed models alike, reloaded from the run directory by every later stage) in
  ``<workdir>/teacher_model/``, written again only when its weights changed (so a rerun with the
  same teacher skips what is done). The import then checks that it fits the data, tells
  probabilities (a softmax head) from logits, and evaluates it.
  """
  digest = hashlib.sha256()
  for w in teacher_model.get_weights():
    digest.update(w.tobytes())
  path = os.path.join(workdir, TEACHER_MODEL_DIR)
  marker = path + ".sha256"  # the weights the SavedModel holds
  saved = os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isfile(marker) and \
      open(marker).read().strip() == digest.hexdigest()
  if not saved:
    bundle = data_lib.load(data)
    with rundir.atomic_path(path) as tmp:
      try:
        tflite_tools.save_serving(teacher_model, tmp, input_shape=bundle.input_shape)
      except Exception as e:  # pylint: disable=broad-except
        raise ConfigError("distill: teacher_model cannot be saved as a SavedModel for the run "
                          "directory (%s: %s)" % (type(e).__name__, " ".join(
                              str(e).split())[:300])) from None
    rundir.atomic_write(marker, digest.hexdigest() + "\n")
  return TeacherConfig(data=data, path=path, progress="none")


def _result(workdir: str, name: str, task: str, tmp) -> DistillResult:
  run = rundir.RunDir(workdir)
  s_entry, q_entry = run.entry(stage_of(STUDENT, name)), run.entry(stage_of(QAT, name))
  e_entry, t_entry = run.entry(stage_of(EXPORT, name)), run.entry(TEACHER)
  with open(run.abspath(e_entry["artifacts"]["report"])) as f:
    report = json.load(f)
  models = {m["name"]: m for m in report["models"]}
  key = "test_mse" if task == "regression" else "test_accuracy"
  short = key[len("test_"):]
  product = models[report["product"]]
  metrics = {
      "teacher_test_" + short: t_entry["metrics"][key],
      "student_test_" + short: s_entry["metrics"][key],
      "qat_test_" + short: q_entry["metrics"][key],
      "int8_test_" + short: product[key],
      "sparsity": product["sparsity"], "int8_gzip_bytes": product["tflite_gzip_bytes"],
      "int8_latency_ms": product["latency_ms"],
  }
  if "teacher_float" in models:
    metrics["teacher_gzip_bytes"] = models["teacher_float"]["tflite_gzip_bytes"]
  return DistillResult(
      student=distill_lib.load_keras_model(run.abspath(s_entry["artifacts"]["model"])),
      qat_model=qat.load_model(workdir, name),
      tflite_path=run.abspath(e_entry["artifacts"]["model"]),
      saved_model_path=run.abspath(e_entry["artifacts"]["saved_model"]),
      metrics=metrics, report=report, workdir=workdir, _tmp=tmp)
