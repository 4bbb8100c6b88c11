"""The export report: ``report.md`` (tables and the stage-by-stage story) and ``accuracy_vs_size.png``
(``mse_vs_size.png`` for regression, where the report speaks of test MSE and MAE, lower is better).

Pure formatting of ``report.json``'s content (no TensorFlow); every number
comes from the export stage's measurements on the ``.tflite`` files.
"""

import importlib
import json
import os
import platform
from typing import List, Optional

from pipelines import config as configs
from pipelines.config import EXPORT, stage_of
from pipelines.data import base as data_base
from pipelines.runtime import rundir, timing

COLUMNS = (("model", "model"), ("test_accuracy", "test acc"), ("tflite_bytes", "size"),
           ("tflite_gzip_bytes", "gzip"), ("latency_ms", "latency (ms)"),
           ("sparsity", "sparsity"), ("params", "params"), ("nonzero_params", "nonzero"))
REGRESSION_SCORES = (("test_mse", "test MSE"), ("test_mae", "test MAE"))


def columns(task: str):
  """The model table's columns for ``task``: accuracy, or MSE and MAE for regression."""
  if task != "regression":
    return COLUMNS
  return COLUMNS[:1] + REGRESSION_SCORES + COLUMNS[2:]


def human_bytes(n) -> str:
  if n is None:
    return "-"
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1024 or unit == "GB":
      return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
    n /= 1024.0
  return str(n)


def _cell(key, value) -> str:
  if value is None:
    return "-"
  if key == "test_accuracy":
    return "%.2f%%" % (100 * value)
  if key in ("test_mse", "test_mae"):
    return "%.5g" % value
  if key in ("tflite_bytes", "tflite_gzip_bytes"):
    return human_bytes(value)
  if key == "latency_ms":
    return "%.3f" % value
  if key == "sparsity":
    return "%.3f" % value
  if key in ("params", "nonzero_params"):
    return "{:,}".format(int(value))
  return str(value)


def models_table(models: List[dict]) -> List[str]:
  """The per-model table (markdown)."""
  cols = columns(configs.task_of(models[0]) if models else "classification")
  lines = ["| " + " | ".join(title for _, title in cols) + " |",
           "|" + "|".join("---" if k == "model" else "---:" for k, _ in cols) + "|"]
  for m in models:
    row = [m["name"]] + [_cell(k, m.get(k)) for k, _ in cols[1:]]
    lines.append("| " + " | ".join(row) + " |")
  return lines


def story_table(story: List[dict]) -> List[str]:
  key, title = ("test_mse", "test MSE") if story and "test_mse" in story[0] else (
      "test_accuracy", "test acc")
  lines = ["| step | what | %s | sparsity | measured on |" % title, "|---|---|---:|---:|---|"]
  for i, s in enumerate(story, 1):
    lines.append("| %d | %s | %s | %s | %s |" % (
        i, s["what"], _cell(key, s.get(key)),
        _cell("sparsity", s.get("sparsity")), s["measured_on"]))
  return lines


def _times(ratio: float, better: str, worse: str) -> str:
  """``ratio`` (the reference's figure over the product's) in words that read the right way: "4.0x
  smaller", or "5.0x larger" for a ratio of 0.2 (not "0.2x smaller")."""
  if ratio >= 1.0:
    return "%.1fx %s" % (ratio, better)
  return "%.1fx %s" % (1.0 / max(ratio, 1e-12), worse)


def comparison_lines(report: dict) -> List[str]:
  c = report.get("comparison")
  if not c:
    return []
  size = _times(c["gzip_ratio"], "smaller gzipped", "larger gzipped")
  speed = _times(c["latency_ratio"], "faster at batch 1", "slower at batch 1")
  if "mse_ratio" in c:
    lines = ["%s vs %s: %.2fx its test MSE, %s, %s, %.1f%% of its weights zero." % (
        c["product"], c["reference"], c["mse_ratio"], size, speed, 100 * c["product_sparsity"])]
  else:
    lines = ["%s vs %s: %+.2f accuracy points, %s, %s, %.1f%% of its weights zero." % (
        c["product"], c["reference"], c["accuracy_delta_points"], size, speed,
        100 * c["product_sparsity"])]
  if c["latency_ratio"] < 1.0:
    lines.append("Warning: %s is slower than %s at batch 1 on this machine: zeros in its weights "
                 "do not make the int8 kernels faster (only removed channels, or sparse float "
                 "kernels, do)." % (c["product"], c["reference"]))
  return lines


# A file is faster (slower) than its twin when the twin's median latency is at least this many
# times its own (or the reverse) and their spreads (10th to 90th percentile) do not overlap.
SPEEDUP = 1.10
RUNTIMES = (("xnnpack", "with XNNPACK"), ("builtin", "with the builtin kernels"))


def _latency(m: dict, runtime: str):
  """``(median, p10, p90)`` of a model entry's batch-1 latency with XNNPACK or without it."""
  if runtime == "xnnpack":
    return m["latency_ms"], m.get("latency_p10_ms", m["latency_ms"]), m["latency_p90_ms"]
  return m["latency_builtin_ms"], m["latency_builtin_p10_ms"], m["latency_builtin_p90_ms"]


def _versus(mine, other):
  """``("faster" | "slower" | "no faster", other median / my median)``."""
  ratio = other[0] / max(mine[0], 1e-9)
  if ratio >= SPEEDUP and mine[2] < other[1]:
    return "faster", ratio
  if ratio <= 1 / SPEEDUP and mine[1] > other[2]:
    return "slower", ratio
  return "no faster", ratio


def _times_phrase(verdict: str, ratio: float) -> str:
  if verdict == "faster":
    return "%.2fx faster" % ratio
  if verdict == "slower":
    return "%.2fx slower" % (1 / ratio)
  return "no faster"


def zeros_speed(m: dict, dense: Optional[dict] = None) -> dict:
  """Whether a file's zero weights made it faster, measured: its batch-1 latency with XNNPACK and
  with the builtin kernels against its twin's, the same file with its zeros filled (dense
  weights: ``m["zeros_filled"]``) or, for sparse-encoded weights, ``dense`` (the same weights
  dense-encoded: the ``student_float`` entry). Returns ``{"verdict", "ratios", "compared_with",
  "sentence"}``, the sentence the report prints for the file."""
  zeros = m.get("weight_zeros", 0)
  if not zeros:
    return {"verdict": "no zeros", "ratios": {}, "compared_with": None,
            "sentence": "`%s` has no zero weights: there is nothing for sparsity to speed up." % (
                m["name"])}
  if m.get("sparse_tensors"):
    if dense is None or "latency_builtin_ms" not in dense:
      return {"verdict": "not compared", "ratios": {}, "compared_with": None,
              "sentence": "`%s` stores its zeros sparse-encoded; no dense-encoded file was "
                          "measured beside it." % m["name"]}
    twin = {r: _latency(dense, r) for r, _ in RUNTIMES}
    what, against = "sparse-encoded zeros", "`%s` (the same weights, dense-encoded)" % (
        dense["name"])
  elif m.get("zeros_filled"):
    twin = {r: (v["median_ms"], v["p10_ms"], v["p90_ms"]) for r, v in m["zeros_filled"].items()}
    what, against = "zeros", "the same file with its zeros filled"
  else:
    return {"verdict": "not compared", "ratios": {}, "compared_with": None,
            "sentence": "`%s`: its zeros were not compared." % m["name"]}
  results = {r: _versus(_latency(m, r), twin[r]) for r, _ in RUNTIMES}
  verdicts = {v for v, _ in results.values()}
  if verdicts == {"no faster"}:
    verdict, how = "no faster", "no faster"
  else:
    verdict = "faster" if "faster" in verdicts else "slower"
    how = ", ".join("%s %s" % (_times_phrase(*results[k]), words) for k, words in RUNTIMES)
  sentence = ("`%s`: its %s (%.1f%% of its weights) made it %s: %.4f ms with XNNPACK and %.4f ms "
              "with the builtin kernels, against %.4f and %.4f ms for %s (%.2fx, %.2fx)." % (
                  m["name"], what, 100 * m.get("sparsity", 0.0), how, _latency(m, "xnnpack")[0],
                  _latency(m, "builtin")[0], twin["xnnpack"][0], twin["builtin"][0], against,
                  results["xnnpack"][1], results["builtin"][1]))
  return {"verdict": verdict, "ratios": {k: round(r, 3) for k, (_, r) in results.items()},
          "compared_with": "dense_file" if m.get("sparse_tensors") else "zeros_filled",
          "sentence": sentence}


def speed_lines(report: dict) -> List[str]:
  """The report's speed section: every file's batch-1 latency with XNNPACK and without it (median
  and 10th-90th percentile), and one sentence each on what its zeros bought."""
  models = [m for m in report["models"] if "latency_builtin_ms" in m]
  if not models:
    return []
  lines = ["| model | XNNPACK ms (p10-p90) | builtin ms (p10-p90) | zeros made it |",
           "|---|---:|---:|---|"]
  for m in models:
    cells = ["%.4f (%.4f-%.4f)" % _latency(m, r) for r, _ in RUNTIMES]
    lines.append("| %s | %s | %s | %s |" % (m["name"], cells[0], cells[1], m.get(
        "zeros_speed", {}).get("verdict", "-")))
  lines.append("")
  lines += ["- " + m["zeros_speed"]["sentence"] for m in models if m.get("zeros_speed")]
  return lines


def target_lines(report: dict) -> List[str]:
  """One bullet per ``--target``: its file, the rules it was checked against, and its runtime's
  own figures (TFLM's accuracy and arena; what the Edge TPU compiler would still decide)."""
  by_name = {m["name"]: m for m in report["models"]}
  lines = []
  for t in report.get("targets", []):
    m = by_name.get(t["model"], {})
    text = "- `%s` -> `%s` (%s): checked: %s" % (t["name"], t.get("file"), t["runtime"],
                                                 "; ".join(t["rules"]))
    quantized = [q for q in m.get("quantization", []) if q != "float"]
    if quantized:
      text += "; weights quantized %s" % " and ".join(quantized)
    text += "."
    tflm_figures = t.get("tflm")
    if tflm_figures and "test_accuracy" in tflm_figures:
      text += (" Run by TFLite Micro's interpreter (%s) on all %d test examples: accuracy "
               "%.2f%% (LiteRT on the same file: %.2f%%, %+.2f points); smallest tensor arena "
               "%s bytes (TFLM's own record, on this 64-bit host); flash %s bytes (the file)." % (
                   tflm_figures["interpreter"], tflm_figures["examples"],
                   100 * tflm_figures["test_accuracy"], 100 * tflm_figures["litert_test_accuracy"],
                   tflm_figures["delta_points"], "{:,}".format(tflm_figures["arena_bytes"]),
                   "{:,}".format(tflm_figures["flash_bytes"])))
    if t.get("xnnpack_sparse"):
      text += " %s%s." % (t["xnnpack_sparse"][0].upper(), t["xnnpack_sparse"][1:])
    if t.get("not_checked"):
      text += " Not checked: %s." % t["not_checked"]
    lines.append(text)
  return lines


# The verdict's thresholds. A drop below the float teacher of more than LARGE_DROP_POINTS accuracy
# points (1 point: 100 of MNIST's 10,000 test examples, 4 of the quickstart's 359, about one
# standard error of an accuracy near 96% measured on 359 examples) blocks "ship it"; regression:
# a test MSE above LARGE_MSE_RATIO times the teacher's.
LARGE_DROP_POINTS = 1.0
LARGE_MSE_RATIO = 1.2
# What quantization (QAT, then the int8 conversion) may cost against the float student before the
# verdict asks for more QAT: half a point (5 of 1,000 test examples), or 10% more MSE.
QAT_LOSS_POINTS = 0.5
QAT_LOSS_MSE_RATIO = 1.1


def _still_improving(metrics: Optional[dict]):
  """``(best epoch, epochs run)`` when a stage's best epoch was its last and early stopping did
  not end it (it was still improving), else None."""
  if not metrics:
    return None
  best, run = metrics.get("best_epoch"), metrics.get("epochs_run")
  if best and run and best == run and not metrics.get("stopped_early"):
    return best, run
  return None


def _examples(points: float, n: int) -> str:
  return "%d of the %d test examples" % (round(abs(points) * n / 100.0), n)


def verdict(report: dict, student: dict, qat: dict, teacher: Optional[dict],
            target_sparsity: float) -> dict:
  """The verdict on the product and the next steps the run's own figures point to.

  ``report``: the export report (``comparison``, ``models``, ``test_examples``, ``workdir``);
  ``student``, ``qat``, ``teacher``: those stages' manifest metrics (``teacher`` None when the
  run has none). Returns ``{"ship": bool, "verdict": one line, "next_steps": [sentences]}``.

  Blocking ("not yet"): an imported teacher measured on a test split kdprune carved itself (the
  comparison may be inflated), quantization that lost more than ``QAT_LOSS_POINTS`` against the
  float student, a drop below the teacher of more than ``LARGE_DROP_POINTS``. Not blocking, but
  said: a teacher or student whose best epoch was its last (more epochs may help). Otherwise
  "ship it" with the product's path, and how to go smaller.
  """
  regression = report.get("task") == "regression"
  n = int(report.get("test_examples") or 0)
  by_name = {m["name"]: m for m in report.get("models", [])}
  product = by_name.get(report.get("product"), {})
  path = os.path.join(report.get("workdir", ""), product.get("file", ""))
  blockers, steps = [], []
  teacher = teacher or {}

  if teacher.get("imported") and teacher.get("test_source"):
    blockers.append("the imported teacher's test figures may be inflated")
    steps.append("The imported teacher was evaluated on a test split %s: if it was trained on "
                 "any of those examples, its test accuracy and the gap to the student are "
                 "inflated. Give the data a test split of its own: %s." % (
                     teacher["test_source"], data_base.own_test_split(report.get("dataset", ""))))

  trained = _still_improving(None if teacher.get("imported") else teacher)
  if trained:
    steps.append("The teacher's best epoch was its last (%d of %d): it was still improving; more "
                 "--teacher_epochs (e.g. --teacher_epochs=%d) may give a better teacher to "
                 "distil from." % (trained[0], trained[1], 2 * trained[1]))
  improving = _still_improving(student)
  if improving:
    steps.append("The student's best epoch was its last (%d of %d): it was still improving; more "
                 "--student_epochs (e.g. --student_epochs=%d) may help." % (
                     improving[0], improving[1], 2 * improving[1]))

  key = "test_mse" if regression else "test_accuracy"
  if product.get(key) is not None and student.get(key) is not None:
    if regression:
      ratio = product[key] / max(student[key], 1e-12)
      lost = ratio > QAT_LOSS_MSE_RATIO
      cost = "the int8 file's test MSE is %.2fx the float student's" % ratio
    else:
      points = round(100 * (student[key] - product[key]), 4)
      lost = points > QAT_LOSS_POINTS
      cost = "the int8 file is %.2f accuracy points (%s) below the float student" % (
          points, _examples(points, n))
    if lost and qat.get("scheme") == "ptq":
      blockers.append("post-training quantization cost too much against the float student")
      steps.append("Quantization cost too much: %s, by post-training quantization (a Keras 3 "
                   "student gets no QAT): a tf_keras student (--student_keras=2) gets "
                   "quantization-aware training (--qat_epochs)." % cost)
    elif lost:
      blockers.append("quantization cost too much against the float student")
      runs = int(qat.get("epochs_run") or 0)
      steps.append("Quantization cost too much: %s after %d QAT epoch%s: more --qat_epochs "
                   "(e.g. --qat_epochs=%d) lets QAT recover it." % (
                       cost, runs, "" if runs == 1 else "s", max(2 * runs, 2)))

  c = report.get("comparison")
  large = None
  if c and "accuracy_delta_points" in c:
    drop = -c["accuracy_delta_points"]
    large = drop > LARGE_DROP_POINTS
    gap = ("%.2f accuracy points (%s) below the teacher" % (drop, _examples(drop, n))
           if drop > 0 else "%.2f accuracy points above the teacher" % -drop)
  elif c and "mse_ratio" in c:
    large = c["mse_ratio"] > LARGE_MSE_RATIO
    gap = "at %.2fx the teacher's test MSE" % c["mse_ratio"]
  if large:
    blockers.append("the int8 student is %s" % gap)
    budget = round(LARGE_MSE_RATIO - 1, 3) if regression else LARGE_DROP_POINTS
    steps.append("The int8 student is %s: prune less (a lower --final_sparsity than %g), widen "
                 "the student (--student_width), or let kdprune-search find the smallest "
                 "student within a budget (kdprune-search --max_drop=%g)." % (
                     gap, target_sparsity, budget))

  if blockers:
    line = "Not yet: %s." % "; ".join(blockers)
  else:
    line = "Ship it: %s%s." % (path, ", %s, %.1fx smaller gzipped" % (gap, c["gzip_ratio"])
                               if large is not None else "")
    if large is not None:
      steps.append("To go smaller: raise --final_sparsity (now %g), or run kdprune-search with "
                   "the drop you accept (--max_drop)." % target_sparsity)
  return {"ship": not blockers, "verdict": line, "next_steps": steps}


def verdict_lines(report: dict) -> List[str]:
  """The verdict and the next steps, one line each ("Verdict: ...", "Next: ..."); none for a
  report written before verdicts were."""
  if not report.get("verdict"):
    return []
  return ["Verdict: " + report["verdict"]] + ["Next: " + s for s in report.get("next_steps", [])]


def markdown(report: dict) -> str:
  lat = report["latency"]
  regression = report.get("task") == "regression"
  lines = ["# kdprune export report: student `%s`" % report["student"], ""]
  lines += comparison_lines(report)
  lines += ["", "## Stage by stage", ""]
  lines += story_table(report["story"])
  lines += ["", "## Exported models", "",
            "Every figure below is measured on the `.tflite` file: %s with the TFLite "
            "interpreter over all %d test examples (%s), latency at batch 1 on %d thread (median "
            "of %d runs after %d warm-up runs), sparsity and parameters read from the weight "
            "tensors inside the file (biases count as parameters, not towards sparsity)." % (
                "MSE and MAE (float outputs, int8 ones dequantized; lower is better)" if regression
                else "accuracy", report["test_examples"], report["dataset"], lat["threads"],
                lat["runs"],
                lat["warmup"]), ""]
  lines += models_table(report["models"])
  lines += [""]
  for m in report["models"]:
    lines.append("- `%s`: %s (`%s`)" % (m["name"], m["description"], m["file"]))
  if report.get("targets"):
    lines += ["", "## Targets", "", "Every file below was checked against its runtime's rules "
              "before any file was written (`--target`)."]
    lines += [""] + target_lines(report)
  speed = speed_lines(report)
  if speed:
    lines += ["", "## Speed: with XNNPACK and without it, and what the zeros buy", "",
              "Batch 1, one thread: LiteRT's default XNNPACK delegate, then its builtin kernels "
              "alone; each file against its twin (the same file with its zero weights filled, "
              "or for sparse-encoded weights the same weights dense-encoded). A file is "
              "faster only when the twin's median is %.2fx its own and their 10th-90th "
              "percentile spreads do not overlap." % SPEEDUP, ""] + speed
  sm = report.get("saved_model")
  if sm:
    score = ("test MSE %.5g" % sm["test_mse"] if "test_mse" in sm else
             "test accuracy %.2f%%" % (100 * sm["test_accuracy"]))
    lines += ["", "SavedModel of the QAT student: `%s` (%s, served through its "
              "`serving_default` signature)." % (sm["path"], score)]
  lines += ["", "Machine: %s." % report.get("machine", "unknown")]
  if report.get("verdict"):  # last: what to do with the product, from the figures above
    lines += ["", "## Verdict and next steps", "", "**Verdict: %s**" % report["verdict"]]
    if report.get("next_steps"):
      lines += [""] + ["- " + s for s in report["next_steps"]]
  return "\n".join(lines + [""])


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (imported at the first plot: it is slow to
  load, and no other command needs it)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  return importlib.import_module("matplotlib.pyplot")


def plot(report: dict, path: str) -> None:
  """``accuracy_vs_size.png``: test accuracy (or MSE) against gzip size (log axis), one point per
  model."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  regression = report.get("task") == "regression"

  def score(m):
    return m["test_mse"] if regression else 100 * m["test_accuracy"]
  for m in report["models"]:
    product = m["name"] == report.get("product")
    ax.scatter(m["tflite_gzip_bytes"], score(m), s=70 if product else 40,
               marker="*" if product else "o", zorder=3,
               color="tab:red" if product else ("tab:gray" if "teacher" in m["name"]
                                                else "tab:blue"))
    ax.annotate(m["name"], (m["tflite_gzip_bytes"], score(m)),
                textcoords="offset points", xytext=(6, 4), fontsize=8)
  ax.set_xscale("log")
  ax.margins(x=0.25, y=0.12)
  ax.set_xlabel("gzipped .tflite size (bytes, log scale)")
  ax.set_ylabel("test %s (TFLite interpreter, %d examples)" % (
      "MSE" if regression else "accuracy, %", report["test_examples"]))
  ax.set_title("kdprune: %s vs size (%s, student %s)" % (
      "MSE" if regression else "accuracy", report["dataset"], report["student"]))
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  with rundir.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png")
  plt.close(fig)


def machine() -> str:
  return "%s, %s, %d CPUs, Python %s" % (platform.platform(terse=True),
                                         platform.processor() or platform.machine(),
                                         os.cpu_count() or 0, platform.python_version())


def _report_json(workdir: str, name: str) -> Optional[dict]:
  path = os.path.join(rundir.RunDir(workdir).stage_dir(stage_of(EXPORT, name)), "report.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def table(workdir: str, name: str = "default", verdict: bool = True) -> str:
  """The report's model table (plain markdown) for printing, ending with the verdict and the
  next steps (unless ``verdict`` is false), or '' if there is no report."""
  out = _report_json(workdir, name)
  if out is None:
    return ""
  steps = verdict_lines(out) if verdict else []
  targets = target_lines(out)
  speed = [m["zeros_speed"]["sentence"] for m in out["models"] if m.get("zeros_speed")]
  return "\n".join(comparison_lines(out) + [""] + models_table(out["models"]) +
                   ([""] + targets if targets else []) +
                   ([""] + ["Speed: " + s for s in speed] if speed else []) +
                   ([""] + steps if steps else []))


def pipeline_summary(workdir: str, outcomes, seconds: float) -> str:
  """The table printed at the end of a pipeline run (``outcomes``: the stages' StageOutcomes)."""
  run_dir = rundir.RunDir(workdir)
  lines = ["", "kdprune pipeline finished in %.1f s: %s" % (seconds, run_dir.workdir), ""]
  row = "  %-18s %-8s %-9s %-9s %-10s %s"
  regression = any(configs.task_of(o.entry.get("metrics", {})) == "regression" for o in outcomes)
  key, title, pattern = (("test_mse", "test_mse", "%.5g") if regression else
                         ("test_accuracy", "test_acc", "%.4f"))
  lines.append(row % ("stage", "status", title, "sparsity", "nonzero", "artifact"))
  for o in outcomes:
    m = o.entry.get("metrics", {})
    model = o.entry.get("artifacts", {}).get("model", "")
    nonzero = m.get("nonzero_params", m.get("params"))
    lines.append(row % (
        o.name, "ran" if o.ran else "skipped", _fmt(m.get(key), pattern),
        _fmt(m.get("sparsity"), "%.3f"), _fmt(nonzero, "%d"),
        os.path.join(run_dir.workdir, model) if model else "-"))
  names = {o.name.split("/", 1)[1] for o in outcomes if o.name.startswith(EXPORT + "/")}
  for name in sorted(names):
    text = table(workdir, name, verdict=False)
    if text:
      lines += ["", "Exported (%s), measured on the files:" % os.path.join(
          run_dir.workdir, EXPORT, name), ""] + [("  " + l) if l else "" for l in text.splitlines()]
  lines += ["", "Wall time by phase (seconds; skipped stages cost nothing this run):", ""]
  lines += ["  " + l for l in timing.table(
      [(o.name, o.entry.get("phases") if o.ran else None) for o in outcomes]).splitlines()]
  lines += ["", "  manifest:    %s" % run_dir.manifest_path,
            "  TensorBoard: tensorboard --logdir %s" % run_dir.workdir]
  for name in sorted(names):  # last: what the figures say to do next
    said = verdict_lines(_report_json(workdir, name) or {})
    if said:
      lines += [""] + (["  %s:" % stage_of(EXPORT, name)] if len(names) > 1 else [])
      lines += ["  " + l for l in said]
  return "\n".join(lines + [""])


def _fmt(value, pattern):
  return pattern % value if value is not None else "-"
