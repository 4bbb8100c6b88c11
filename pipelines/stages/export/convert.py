"""The export stage's work (TensorFlow imported here, at the top); its checks are in
:mod:`pipelines.stages.export`."""

import json
import os
import shutil
import tempfile
import time

import numpy as np

from models.compat import tf
from pipelines.config import (
  BASELINES,
  PREPROCESSING_FILE,
  PREPROCESSING_METADATA,
  PRODUCT,
  ExportConfig,
  tasks,
)
from pipelines.config.errors import ConfigError, StageError
from pipelines.data import bundle as data_lib
from pipelines.export import report, targets, tflm
from pipelines.export import tflite as tflite_tools
from pipelines.quantize import backend as quantize_backend
from pipelines.runtime import progress, rundir, timing, upstream
from pipelines.runtime.execute import StageResult
from pipelines.stages.export import validate
from pipelines.train import distill, summaries


def run(config: ExportConfig, workdir: str) -> StageResult:
  """Converts, measures and reports; see the module docstring."""
  validate(config)
  timing.lap("startup")
  run_dir = rundir.RunDir(workdir)
  up = upstream.export_inputs(workdir, config.name)
  bundle = data_lib.load(config.data)
  timing.lap("data")
  stage_dir = run_dir.stage_dir(config.stage)
  extra = [targets.get(t) for t in config.targets if t != "litert"]  # files beside the product
  model_record = {
      "file": PRODUCT + ".tflite", "saved_model": "saved_model", "int8_io": config.int8_io,
      "inputs": "the normalised float32 inputs (int8 with --int8_io: quantized with the input "
                "tensor's own scale and zero point)"}
  if extra:
    model_record["targets"] = {t.name: t.file + ".tflite" for t in extra}
  if config.int8_io_type != "int8":
    model_record["int8_io_type"] = config.int8_io_type
  preprocessing = dict(bundle.preprocessing(), model=model_record)
  preprocessing_bytes = json.dumps(preprocessing, sort_keys=True).encode("utf-8")

  regression = config.data.regression
  key = "test_" + tasks.headline(config.data.task)[0]  # test_accuracy or test_mse
  q_entry = up["qat"]
  upstream_student = upstream.student_record(workdir, config.name)
  pruned_layers = upstream_student.layers  # {layer: {"weights", "zeros", ...}}
  # The sparse float file is compared with the dense float one: xnnpack_sparse brings it along.
  baselines = tuple(b for b in BASELINES if b in config.baselines or (
      b == "student_float" and any(t.source == "student" for t in extra)))
  student = (distill.load_keras_model(upstream_student.model_path)
             if any(b.startswith("student") for b in baselines) else None)
  files = upstream.qat_files(workdir, config.name)
  # The QAT stage's serving SavedModel; a QAT run recorded before it wrote one is rebuilt.
  qat_serving = run_dir.abspath(q_entry["artifacts"]["saved_model"]) if (
      "saved_model" in q_entry["artifacts"]) else None
  if qat_serving:
    qmodel = None
  else:
    qat_student = distill.load_keras_model(files["student_model"])
    qmodel = quantize_backend.for_model(qat_student).rebuild(
        qat_student, files["scheme"], files["weights"], "kdprune-qat --workdir=%s" % workdir)
  # A Keras 3 student had no QAT (scheme "ptq"): its product is full-integer post-training
  # quantization of the pruned float student, calibrated on training examples.
  ptq = q_entry["metrics"].get("scheme") == "ptq"
  sources_ = [(PRODUCT, qmodel, "int8" if ptq else "qat",
               "the product: %s student, int8 weights and activations" % (
                   "post-training quantized (full integer)" if ptq else "QAT"),
               q_entry["metrics"][key])]
  if "teacher" in up and "teacher_float" in baselines:
    teacher = distill.load_teacher(workdir, bundle, config.data.dataset)
    sources_.append(("teacher_float", teacher, "float", "the float teacher (reference)",
                     up["teacher"]["metrics"][key]))
  elif "teacher_float" in baselines:
    progress.say("[%s] no finished teacher in %s: the report has no teacher reference" % (
        config.stage, run_dir.workdir))
  student_acc = upstream_student.metrics[key]
  sources_ += [source for source in [
      ("student_float", student, "float", "the float pruned student", student_acc),
      ("student_ptq_dynamic", student, "dynamic",
       "post-training dynamic-range quantization of the pruned student (int8 weights, float "
       "activations)", student_acc),
      ("student_ptq_int8", student, "int8",
       "post-training full-integer quantization of the pruned student (%d calibration "
       "examples)" % config.representative_examples, student_acc),
  ] if source[0] in baselines]

  timing.lap("build")
  test_batches = bundle.batches("test", config.eval_batch_size)
  example = bundle.head("test", 1)[0][0]
  representative = tflite_tools.representative(bundle, config.representative_examples,
                                                config.data.seed)
  timing.lap("data")
  with tempfile.TemporaryDirectory(prefix="kdprune-export-") as tmp:
    serving = qat_serving or os.path.join(tmp, "saved_model")
    if not qat_serving:
      with timing.phase("saving"):
        tflite_tools.save_serving(qmodel, serving, autograph=False)
    # Every target's file is converted and checked against its runtime's rules before anything
    # is written: a student a target cannot take leaves the export folder as it was.
    with timing.phase("conversion"):
      checked = _target_files(config, extra, serving, student, preprocessing_bytes, example)
    tb_dir, _ = rundir.fresh_stage_logs(stage_dir)
    # The SavedModel next: the product is converted from it (one trace of the QAT model, not two).
    saved_path = os.path.join(stage_dir, "saved_model")
    with timing.phase("saving"):
      with rundir.atomic_path(saved_path) as tmp_saved:
        shutil.copytree(serving, tmp_saved)
  student_files = {t.name: (t.file, t.description, student_acc if t.source == "student" else
                            q_entry["metrics"][key]) for t in extra}
  sources_ += [(student_files[name][0], None, None, student_files[name][1],
                student_files[name][2]) for name in checked]
  by_file = {targets.get(name).file: (name, c) for name, c in checked.items()}
  models = []
  for name, model, mode, description, keras_acc in sources_:
    start = time.time()
    target, target_check = by_file.get(name, (None, None))
    with timing.phase("conversion"):
      if target:
        data = target_check["data"]  # converted and checked above
      elif name == PRODUCT:
        data = tflite_tools.convert_saved_model(saved_path, mode, representative=representative,
                                                int8_io=config.int8_io,
                                                io_type=config.int8_io_type)
      else:
        data = tflite_tools.convert(model, mode, representative=representative,
                                    int8_io=config.int8_io, io_type=config.int8_io_type)
      # Every file takes the same raw inputs: each carries the record (kdprune-predict reads it
      # when preprocessing.json is not beside the file; a target's file has it already), unless
      # --noembed_preprocessing.
      if not target and config.embed_preprocessing:
        data = tflite_tools.with_metadata(data, PREPROCESSING_METADATA, preprocessing_bytes)
    path = os.path.join(stage_dir, name + ".tflite")
    with rundir.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        f.write(data)
    convert_seconds = (target_check["convert_seconds"] if target else 0.0) + time.time() - start
    ops = tflite_tools.inspect_ops(data)
    if name == PRODUCT:
      product_ops = ops
      if not ops["integer_only"]:
        raise StageError(config.stage, "%s is not integer-only: the converter left %d op(s) "
                         "computing in float: %s (only a QUANTIZE of the inputs and a DEQUANTIZE "
                         "of the outputs may touch float tensors)" % (
                             path, len(ops["float_ops"]), "; ".join(ops["float_ops"][:10])))
    weights = tflite_tools.inspect_weights(data)
    if name.startswith("student"):
      lost = tflite_tools.lost_zeros(weights["layers"], pruned_layers)
      if lost:
        raise StageError(config.stage, "%s lost pruned zeros in layer(s) %s: the conversion lost "
                         "sparsity" % (path, ", ".join(
                             "%s (%d zero weights in the file, %d in the pruned student)" % x
                             for x in lost)))
    with timing.phase("evaluation"):
      if regression:
        measured = tflite_tools.evaluate_regression(data, test_batches,
                                                    config.data.regression_loss)
        scores = {"test_mse": measured["mse"], "test_mae": measured["mae"]}
      else:
        measured = tflite_tools.evaluate(data, test_batches)
        scores = {"test_accuracy": measured["accuracy"]}
    with timing.phase("latency"):
      lat = tflite_tools.latency(data, example, runs=config.latency_runs,
                                 warmup=config.latency_warmup)
      speed = _speed(config, data, example, weights, lat)
    if target == "tflm":
      with timing.phase("evaluation"):
        target_check["tflm"] = _tflm_figures(data, test_batches, target_check["tflm"],
                                             scores["test_accuracy"])
    entry = {
        "name": name, "description": description, "file": run_dir.relpath(path),
        **scores, "test_loss": round(measured["loss"], 6),
        "keras_" + key: keras_acc,
        "tflite_bytes": len(data), "tflite_gzip_bytes": tflite_tools.gzip_size(data),
        "latency_ms": lat["median"], "latency_p90_ms": lat["p90"],
        "sparsity": weights["sparsity"], "params": weights["params"],
        "nonzero_params": weights["nonzero_params"], "weights": weights["weights"],
        "weight_zeros": weights["weight_zeros"], "weight_dtypes": weights["weight_dtypes"],
        "layers": weights["layers"], "op_counts": ops["by_op"],
        "integer_only": ops["integer_only"], "convert_seconds": round(convert_seconds, 2),
        "latency_p10_ms": lat["p10"], **speed,
        "sparse_tensors": weights["sparse_tensors"],
        "quantization": sorted({layer["quantization"] or "float" for layer in weights["layers"]}),
    }
    if target or (name == PRODUCT and extra and "litert" in config.targets):
      entry["target"] = target or "litert"
      entry.update({k: v for k, v in (target_check or {}).items()
                    if k in ("tflm", "xnnpack_sparse")})
    models.append(entry)
    progress.say("[%s] %-20s %s %.5g  %8d B (gzip %7d)  %.3f ms  sparsity %.3f" % (
        config.stage, name, "mse" if regression else "acc", entry[key], entry["tflite_bytes"],
        entry["tflite_gzip_bytes"], entry["latency_ms"], entry["sparsity"]))
  # Order for the tables: teacher, then the student from float to the product, then the targets.
  order = BASELINES + tuple(t.file for t in targets.TARGET_RECORDS)
  models.sort(key=lambda m: order.index(m["name"]))
  by_name = {m["name"]: m for m in models}
  for m in models:  # one sentence per file: did its zeros make it faster?
    m["zeros_speed"] = report.zeros_speed(m, by_name.get("student_float") if m.get(
        "sparse_tensors") else None)
  timing.lap("conversion")  # the checks and file writes between the timed blocks

  serving = tf.saved_model.load(saved_path).signatures["serving_default"]
  correct = total = 0
  sq_error = 0.0
  for x, y in test_batches:
    outputs = list(serving(x).values())[0].numpy()
    if regression:
      sq_error += float(np.sum((outputs.reshape(len(outputs), -1) - y.numpy().reshape(
          len(outputs), -1)) ** 2))
      total += int(np.size(outputs))
    else:
      correct += int(np.sum(np.argmax(outputs, -1) == y.numpy().reshape(-1)))
      total += int(y.shape[0])
  saved = {"path": run_dir.relpath(saved_path),
           key: (sq_error if regression else correct) / max(1, total)}
  timing.lap("evaluation")

  product = by_name[PRODUCT]
  story = []
  if "teacher" in up:
    story.append({"what": "float teacher", key: up["teacher"]["metrics"][key],
                  "sparsity": None, "measured_on": "%s (Keras)" % up["teacher"]["artifacts"]["model"]})
  story += [
      {"what": "pruned student (distilled)" if upstream_student.distilled else
               "pruned student (hard labels)", key: student_acc,
       "sparsity": upstream_student.sparsity,
       "measured_on": "%s (Keras)" % run_dir.relpath(upstream_student.model_path)},
      {"what": "QAT student (%s)" % q_entry["metrics"].get("scheme"),
       key: q_entry["metrics"][key], "sparsity": q_entry["metrics"][
           "sparsity"], "measured_on": "%s (Keras, %s)" % (
               q_entry["artifacts"]["model"], "float: no QAT" if ptq else "fake-quantized")},
      {"what": "int8 student", key: product[key],
       "sparsity": product["sparsity"], "measured_on": "%s (TFLite interpreter)" % product["file"]},
  ]
  out = {
      "student": config.name, "workdir": run_dir.workdir, "dataset": bundle.name,
      "task": config.data.task,
      "test_examples": int(bundle.num_examples["test"]), "product": PRODUCT,
      "latency": {"batch": 1, "threads": 1, "runs": config.latency_runs,
                  "warmup": config.latency_warmup},
      "machine": report.machine(), "int8_io": config.int8_io,
      "models": models, "story": story, "saved_model": saved, "preprocessing": preprocessing,
      # Every op of the product with its tensor types: checked integer-only above.
      "product_ops": {"integer_only": product_ops["integer_only"], "by_op": product_ops["by_op"],
                      "ops": product_ops["ops"]},
  }
  if extra or config.targets != ("litert",):
    out["targets"] = [_target_record(targets.get(t), by_name, checked, config) for t in
                      config.targets]
  if "teacher_float" in by_name:
    ref = by_name["teacher_float"]
    if regression:
      quality = {"mse_ratio": round(product["test_mse"] / max(ref["test_mse"], 1e-12), 4)}
    else:
      quality = {"accuracy_delta_points": round(
          100 * (product["test_accuracy"] - ref["test_accuracy"]), 4)}
    out["comparison"] = {
        "product": PRODUCT, "reference": "teacher_float", **quality,
        "gzip_ratio": round(ref["tflite_gzip_bytes"] / product["tflite_gzip_bytes"], 3),
        "size_ratio": round(ref["tflite_bytes"] / product["tflite_bytes"], 3),
        "latency_ratio": round(ref["latency_ms"] / max(product["latency_ms"], 1e-9), 3),
        "product_sparsity": product["sparsity"],
    }
  out.update(report.verdict(out, upstream_student.metrics, q_entry["metrics"],
                            up["teacher"]["metrics"] if "teacher" in up else None,
                            upstream_student.target_sparsity))
  report_json = os.path.join(stage_dir, "report.json")
  report_md = os.path.join(stage_dir, "report.md")
  plot_path = os.path.join(stage_dir, "%s_vs_size.png" % ("mse" if regression else "accuracy"))
  preprocessing_json = os.path.join(stage_dir, PREPROCESSING_FILE)
  rundir.write_json(preprocessing_json, preprocessing)
  rundir.write_json(report_json, out)
  text = report.markdown(out)
  rundir.atomic_write(report_md, text)
  report.plot(out, plot_path)
  summaries.write_text(tb_dir, "export/report", text)

  scored = ("test_mse", "test_mae") if regression else ("test_accuracy",)
  metrics = {k: product[k] for k in scored + ("tflite_bytes", "tflite_gzip_bytes",
                                              "latency_ms", "sparsity", "params", "nonzero_params")}
  metrics["saved_model_" + key] = saved[key]
  metrics.update({"%s_%s" % (k, m["name"]): m[k] for m in models
                  for k in scored + ("tflite_gzip_bytes", "latency_ms")})
  if "comparison" in out:
    metrics.update({k: out["comparison"][k] for k in ("mse_ratio", "accuracy_delta_points",
                                                     "gzip_ratio", "latency_ratio")
                    if k in out["comparison"]})
  tflm_file = by_name.get(targets.get("tflm").file, {}).get("tflm")
  if tflm_file:
    metrics.update({"tflm_test_accuracy": tflm_file["test_accuracy"],
                    "tflm_arena_bytes": tflm_file["arena_bytes"]})
  metrics_path = os.path.join(stage_dir, "metrics.json")
  rundir.write_json(metrics_path, metrics)
  progress.say("[%s] report -> %s" % (config.stage, report_md))
  timing.lap("saving")
  return StageResult(
      artifacts={"model": os.path.join(stage_dir, PRODUCT + ".tflite"), "report": report_json,
                 "metrics": metrics_path, **{"target_" + t.name: os.path.join(
                     stage_dir, t.file + ".tflite") for t in extra},
                 "report_md": report_md, "plot": plot_path, "saved_model": saved_path,
                 "preprocessing": preprocessing_json},
      metrics=metrics)


def _target_files(config: ExportConfig, extra, serving: str, student, preprocessing_bytes: bytes,
                  example) -> dict:
  """Converts the file of every target in ``extra`` and checks it against the target's rules;
  the first rule broken is a one-line :class:`ConfigError` naming the op or tensor (nothing has
  been written yet). Returns ``{target: {"data", "convert_seconds", ...}}``; the tflm file is
  also run in TFLM's interpreter, which finds its smallest tensor arena."""
  out, by_io = {}, {}
  for target in extra:
    start = time.time()
    io_type = target.io_type(config.int8_io_type)
    if target.source == "student":
      data = tflite_tools.convert(student, target.mode)
    else:  # the QAT student with integer inputs and outputs and the batch fixed at 1
      if io_type not in by_io:
        by_io[io_type] = tflite_tools.convert_saved_model(serving, target.mode, int8_io=True,
                                                          io_type=io_type, batch=1)
      data = by_io[io_type]
    if config.embed_preprocessing:
      data = tflite_tools.with_metadata(data, PREPROCESSING_METADATA, preprocessing_bytes)
    model, weights = tflite_tools.inspect_model(data), tflite_tools.inspect_weights(data)
    problem = targets.problem(target, model, weights, io_type)
    if problem:
      raise ConfigError(problem)
    record = {"data": data}
    if target.name == "tflm":
      x = tflite_tools.to_input(np.asarray(example, np.float32)[None],
                                tflite_tools.io_details(data)[0])[0]
      try:
        record["tflm"] = tflm.smallest_arena(data, x)
      except tflm.TflmError as e:
        raise ConfigError("--target=tflm: %s" % e) from None
    if target.mode == "sparse":
      record["xnnpack_sparse"] = targets.xnnpack_sparse_note(model, weights)
    record["convert_seconds"] = time.time() - start
    out[target.name] = record
  return out


def _speed(config: ExportConfig, data: bytes, example, weights: dict, lat: dict) -> dict:
  """Batch-1 latency without XNNPACK (the builtin kernels) beside ``lat`` (with it), and both for
  the same file with its zero weights filled (:func:`tflite_tools.filled_zeros`): what the
  zeros buy in each runtime."""
  runs = dict(runs=config.latency_runs, warmup=config.latency_warmup)
  builtin = tflite_tools.latency(data, example, xnnpack=False, **runs)
  out = {"latency_builtin_ms": builtin["median"], "latency_builtin_p10_ms": builtin["p10"],
         "latency_builtin_p90_ms": builtin["p90"]}
  if weights["weight_zeros"] and not weights["sparse_tensors"]:
    twin = tflite_tools.filled_zeros(data)
    filled = {"xnnpack": tflite_tools.latency(twin, example, **runs),
              "builtin": tflite_tools.latency(twin, example, xnnpack=False, **runs)}
    out["zeros_filled"] = {k: {"median_ms": v["median"], "p10_ms": v["p10"], "p90_ms": v["p90"]}
                           for k, v in filled.items()}
  return out


def _tflm_figures(data: bytes, test_batches, arena: dict, litert_accuracy: float) -> dict:
  """The tflm file run by TFLM's interpreter over the whole test set, in its smallest arena."""
  inputs, outputs = tflite_tools.io_details(data)
  xs, ys = [], []
  for x, y in test_batches:
    xs.append(tflite_tools.to_input(np.asarray(x, np.float32), inputs))
    ys.append(np.asarray(y).reshape(-1))
  start = time.time()
  logits = tflite_tools.from_output(tflm.run(data, np.concatenate(xs), arena["arena_bytes"]),
                                    outputs)
  labels = np.concatenate(ys)
  accuracy = float(np.mean(np.argmax(logits.reshape(len(labels), -1), -1) == labels))
  return {"test_accuracy": accuracy, "litert_test_accuracy": litert_accuracy,
          "delta_points": round(100 * (accuracy - litert_accuracy), 4),
          "arena_bytes": arena["arena_bytes"], "recorded_arena_bytes": arena["recorded_bytes"],
          "flash_bytes": len(data), "examples": int(len(labels)),
          "seconds": round(time.time() - start, 2), "interpreter": tflm.version()}


def _target_record(target, by_name: dict, checked: dict, config: ExportConfig) -> dict:
  """What report.json says of one target: its file and runtime, the rules checked."""
  m = by_name.get(target.file, {})
  rules = []
  if target.io == "integer":
    rules.append("%s inputs and outputs" % target.io_type(config.int8_io_type))
  elif target.name == "litert":
    rules.append("%s inputs and outputs" % (config.int8_io_type if config.int8_io else "float32"))
  if target.integer_only:
    rules.append("every op integer" if target.io == "integer" else
                 "integer-only (a QUANTIZE of the inputs and a DEQUANTIZE of the outputs apart)")
  if target.ops is not None:
    rules.append("every op in %s" % target.ops_source)
  if target.no_fused_activation:
    rules.append("no fused activation on %s" % ", ".join(sorted(target.no_fused_activation)))
  if target.static_shapes:
    rules.append("static shapes (batch 1)")
  if target.max_dims_above_one:
    rules.append("at most %d dimensions above 1 per tensor" % target.max_dims_above_one)
  if target.mode == "sparse":
    rules.append("float weights, sparse-encoded")
  record = {"name": target.name, "file": m.get("file"), "model": target.file,
            "runtime": target.runtime, "description": target.description, "rules": rules,
            "passed": True}
  if target.not_checked:
    record["not_checked"] = target.not_checked
  for key in ("tflm", "xnnpack_sparse"):
    if key in m:
      record[key] = m[key]
  return record


# Conversion and measurement need no other worker: the chief does them, the others wait.
