"""kdprune-search: the smallest (or fastest) int8 student within an accuracy budget of the teacher.

  kdprune-search --workdir=runs/search --max_drop=0.5                       # points of accuracy
  kdprune-search --workdir=runs/search --max_drop=0.5 --objective=latency \
      --structures=unstructured,channels --student_widths=8,16
  kdprune-search --workdir=runs/search --max_drop=0.5 --parallel=4          # 4 local processes
  kdprune-search --workdir=runs/search --max_gzip_bytes=8000                # the most accurate
                                                                            # within a file size

The space is every *chain* (structure, width) times one continuous value:
the final sparsity of ``unstructured`` students (``--search_sparsity_range``),
the channel fraction of ``channels`` students (``--search_channel_range``);
``m_by_n`` is one student per width, at m/n. Each chain is bisected
(:func:`bisect`): its lowest value first (out of budget: the chain is
abandoned), then its highest, then the middle of the bracket until it is
narrower than ``--search_tolerance``. Every candidate is a named student of
the one teacher (its cached outputs shared) through the pipeline's student,
QAT and export stages; a student whose float validation figure at the end of
pruning is already out of budget is abandoned before QAT and export.

A candidate is judged on the **validation** split, by its exported int8
``.tflite`` (run here through the TFLite interpreter) against the float
teacher's validation figure: classification within ``--max_drop`` accuracy
points, regression with an MSE at most ``1 + --max_drop`` times the teacher's.
Among those within budget the smallest gzipped file (``--objective=size``) or
the lowest batch-1 latency (``latency``) wins; its test figures are reported
beside, never used to choose. ``--max_gzip_bytes`` is the dual budget: among the
files that fit, the best validation figure wins; chains are then bisected from
their sparsest end.

Parallel: chain ``j`` belongs to task ``j % --num_tasks``; ``--task_index``
runs only its own (task 0 trains the teacher, the others wait for it), and
writes ``search/chains/<chain>.json``. When every chain is done the task that
finishes last collects (``--collect`` does it alone). Every process shares
the run directory; the manifest is locked around each update.

Writes ``<workdir>/search/``: ``search.json`` (``best``, ``candidates``, the
budget and the teacher), ``search.md``, ``pareto.png`` (validation figure
against size) and ``best/`` (a copy of the chosen student's export, with its
``report.json``, and ``choice.json``).
"""

import dataclasses
import json
import os
import shutil
import time
from typing import Callable, List, Optional, Tuple

from pipelines.config import (
  SEARCH as NAME,
)
from pipelines.config import (
  STUDENT,
  TEACHER,
  ConfigError,
  PipelineConfig,
  SearchConfig,
  StageError,
  stage_of,
  tasks,
)
from pipelines.data import sources
from pipelines.export import pareto as pareto_lib
from pipelines.runtime import progress, rundir
from pipelines.stages import pipeline, sweep

__all__ = ["NAME", "SearchConfig", "bisect", "chain_name", "validate", "run", "collect"]

CHAINS_DIR = "chains"  # search/chains/<chain>.json: one finished chain each
COLLECT_LOCK = "search.lock"  # beside the manifest: one collector at a time
DIGITS = {"unstructured": 3, "channels": 2, "m_by_n": 3}  # the value's precision (student names)


def bisect(within: Callable[[float], bool], lo: float, hi: float, tolerance: float,
           digits: int = 3) -> Tuple[Optional[float], List[float]]:
  """The largest value in ``[lo, hi]`` that is ``within`` budget, to ``tolerance``.

  ``within`` must be monotone (within at ``x`` implies within below ``x``), as accuracy is
  against sparsity. ``lo`` is tried first: out of budget, the chain is abandoned (``None``);
  then ``hi``; then the middle of the bracket (rounded to ``digits``) until it is narrower
  than ``tolerance``: ``2 + ceil(log2((hi - lo) / tolerance))`` evaluations at most. Returns
  ``(best or None, the values tried in order)``.
  """
  tried = []

  def ok(x):
    tried.append(x)
    return within(x)

  lo, hi = round(lo, digits), round(hi, digits)
  if not ok(lo):
    return None, tried
  if hi <= lo or ok(hi):
    return max(lo, hi), tried
  good, bad = lo, hi
  while bad - good > tolerance:
    mid = round((good + bad) / 2, digits)
    if mid in (good, bad):
      break
    if ok(mid):
      good = mid
    else:
      bad = mid
  return good, tried


def chain_name(config: PipelineConfig, structure: str, width) -> str:
  return "%s_w%s" % (structure, width if width is not None else config.student.model.width)


def _range(search: SearchConfig, structure: str) -> Tuple[Optional[float], Optional[float]]:
  if structure == "unstructured":
    return search.sparsity_range
  if structure == "channels":
    return search.channel_range
  return None, None  # m_by_n: m/n, one student


def _candidate(config: PipelineConfig, structure: str, width, value) -> Tuple[str, dict,
                                                                           PipelineConfig]:
  spec = {"structure": structure, "width": width, "method": None,
          "sparsity": value if structure == "unstructured" else None}
  if structure == "channels":
    spec["channel_fraction"] = value
  w = width if width is not None else config.student.model.width
  name = sweep.student_name(config.student, structure, w, sparsity=value,
                            channel_fraction=value if structure == "channels" else None)
  return name, spec, sweep.pipeline_for(config, name, spec)


def validate(config: PipelineConfig, search: SearchConfig) -> None:
  """Every check before any work: the budget and space, and both ends of every chain's pipeline."""
  search.validate(config.student.data.task)
  for structure, width in search.chains():
    for value in sorted(set(_range(search, structure))):
      pipeline.validate(_candidate(config, structure, width, value)[2])


def fingerprint(config: PipelineConfig, search: SearchConfig, workdir: str) -> str:
  """What decides every chain's result: the space, every stage's resolved config and the teacher
  run the students learn from (a retrained teacher invalidates the finished chains)."""
  teacher = rundir.RunDir(workdir).entry(TEACHER) or {}
  return rundir.fingerprint({"space": search.space(), "teacher": config.teacher.resolved(),
                             "teacher_run": [teacher.get("fingerprint"), teacher.get("finished")],
                             "student": config.student.resolved(),
                             "qat": config.qat.resolved(), "export": config.export.resolved()})


class _Judge:
  """The budget against the teacher, and the validation figures of exported students."""

  def __init__(self, config: PipelineConfig, search: SearchConfig, workdir: str):
    self.config, self.search, self.workdir = config, search, workdir
    self.task = config.student.data.task
    self.metric, self.label, self.higher = tasks.headline(self.task)
    teacher = rundir.RunDir(workdir).entry(TEACHER) or {}
    self.reference = float(teacher["metrics"]["val_" + self.metric])
    self._batches = None
    sizes = sources.split_sizes(config.export.data)  # no TensorFlow; None when unrecorded
    self.validation_examples = sizes["validation"] if sizes else None
    self.max_bytes = search.max_gzip_bytes or None  # a size budget instead of --max_drop

  def accepts(self, val: float, gzip_bytes: int) -> bool:
    """Whether an exported candidate is within budget: its file fits the size budget, or its
    validation figure is within --max_drop of the teacher's."""
    return gzip_bytes <= self.max_bytes if self.max_bytes else self.within(val)

  def budget_examples(self) -> Optional[float]:
    """The accuracy budget in validation examples (classification; None otherwise)."""
    if self.max_bytes or not self.higher or not self.validation_examples:
      return None
    return self.search.max_drop / 100.0 * self.validation_examples

  def budget_lines(self) -> List[str]:
    """What the budget means in examples, and a warning line when that is only a few."""
    examples = self.budget_examples()
    if examples is None:
      return []
    lines = ["[%s] --max_drop=%g points is %.1f of the %d validation examples" % (
        NAME, self.search.max_drop, examples, self.validation_examples)]
    if examples < FEW_EXAMPLES:
      lines.append(
          "[%s] warning: a budget of %.1f validation examples is within the noise of one run: "
          "the chosen student's test drop may well exceed --max_drop; raise "
          "--validation_fraction (now %g), or pass a source with a validation split of its "
          "own" % (NAME, examples, self.config.export.data.validation_fraction))
    return lines

  def threshold(self) -> float:
    if self.higher:  # accuracy points below the teacher
      return self.reference - self.search.max_drop / 100.0
    return self.reference * (1.0 + self.search.max_drop)  # an MSE ratio

  def within(self, value: float) -> bool:
    eps = 1e-9
    return value >= self.threshold() - eps if self.higher else value <= self.threshold() + eps

  def budget(self) -> dict:
    if self.max_bytes:
      return {"max_gzip_bytes": self.max_bytes, "unit": "bytes of the gzipped int8 .tflite",
              "reference": "float teacher, validation %s %.6g" % (self.label, self.reference),
              "teacher_val_" + self.metric: self.reference}
    examples = self.budget_examples()
    return {"max_drop": self.search.max_drop,
            "unit": "accuracy points" if self.higher else "MSE ratio - 1",
            "reference": "float teacher, validation %s %.6g" % (self.label, self.reference),
            "teacher_val_" + self.metric: self.reference,
            "threshold_val_" + self.metric: round(self.threshold(), 6),
            **({"validation_examples": self.validation_examples,
                "examples": round(examples, 2)} if examples is not None else {})}

  def drop(self, value: float) -> float:
    """Points below the teacher (classification) or the MSE ratio to it (regression)."""
    if self.higher:
      return round(100.0 * (self.reference - value), 4)
    return round(value / max(self.reference, 1e-12), 4)

  def tflite_val(self, path: str) -> float:
    # pylint: disable=g-import-not-at-top
    from pipelines.data import bundle as data_lib
    from pipelines.export import tflite as tflite_tools
    # pylint: enable=g-import-not-at-top
    if self._batches is None:  # the bundle once per process
      data_config = self.config.export.data
      self._batches = data_lib.load(data_config).batches(
          "validation", self.config.export.eval_batch_size)
    with open(path, "rb") as f:
      data = f.read()
    if self.higher:
      return float(tflite_tools.evaluate(data, self._batches)["accuracy"])
    return float(tflite_tools.evaluate_regression(
        data, self._batches, self.config.export.data.regression_loss)["mse"])


def _evaluate(judge: _Judge, structure: str, width, value, chain: str, log) -> dict:
  """One candidate: the student stage, the early check, then QAT and export and the .tflite's
  validation figure."""
  config, workdir, m = judge.config, judge.workdir, judge.metric
  name, spec, c = _candidate(config, structure, width, value)
  outcomes = pipeline.run(dataclasses.replace(c, until=STUDENT), workdir, log=log)
  float_val = float(outcomes[-1].entry["metrics"]["val_" + m])
  record = {"student": name, "chain": chain, "structure": structure,
            "width": c.student.model.width, "value": value,
            "target_sparsity": c.student.pruning.target,
            "channel_fraction": value if structure == "channels" else None,
            "float_val_" + m: float_val, "abandoned": None}
  if not judge.max_bytes and not judge.within(float_val):  # (a size is known once exported)
    record.update(abandoned="float validation %s %.5g at the end of pruning is already out of "
                  "budget (%.5g)" % (judge.label, float_val, judge.threshold()),
                  within_budget=False)
    log("[%s] %s abandoned: %s" % (NAME, name, record["abandoned"]))
    return record
  pipeline.run(c, workdir, log=log)
  report = sweep.read_report(workdir, name)
  entry = sweep.student_entry(report, name, spec, c, "test_" + m)
  product = {x["name"]: x for x in report["models"]}[report["product"]]
  val = judge.tflite_val(rundir.RunDir(workdir).abspath(product["file"]))
  record.update({k: entry[k] for k in ("test_" + m, "tflite_bytes", "tflite_gzip_bytes",
                                       "latency_ms", "sparsity", "params", "nonzero_params",
                                       "report")})
  record.update({"val_" + m: val, "drop": judge.drop(val),
                 "within_budget": judge.accepts(val, record["tflite_gzip_bytes"])})
  log("[%s] %s: int8 validation %s %.5g (%s %.5g), %d B gzipped -> %s" % (
      NAME, name, judge.label, val, "drop" if judge.higher else "ratio", record["drop"],
      record["tflite_gzip_bytes"], "within budget" if record["within_budget"] else "out of budget"))
  return record


def _chain_path(workdir: str, chain: str) -> str:
  return os.path.join(rundir.RunDir(workdir).stage_dir(NAME), CHAINS_DIR, chain + ".json")


def _read_chain(workdir: str, chain: str, fp: str) -> Optional[dict]:
  path = _chain_path(workdir, chain)
  if rundir.artifact_problem(path):
    return None
  with open(path) as f:
    out = json.load(f)
  return out if out.get("fingerprint") == fp else None


def run_chain(judge: _Judge, structure: str, width, fp: str, log) -> dict:
  """Bisects one chain (or reuses its finished record); writes ``search/chains/<chain>.json``."""
  chain = chain_name(judge.config, structure, width)
  done = _read_chain(judge.workdir, chain, fp)
  if done is not None:
    log("[%s] chain %s done already (%d candidates); skipping" % (
        NAME, chain, len(done["candidates"])))
    return done
  start = time.time()
  candidates = []

  def within(value):
    candidates.append(_evaluate(judge, structure, width, value, chain, log))
    return candidates[-1]["within_budget"]

  lo, hi = _range(judge.search, structure)
  if lo is None:  # m_by_n: one student
    within(None)
    best = None
  elif judge.max_bytes:
    # A size budget holds from some value up (the sparser, the smaller): the smallest value that
    # fits is the largest of the negated values, bisected from the sparsest end.
    best, _ = bisect(lambda v: within(-v), -hi, -lo, judge.search.tolerance, DIGITS[structure])
    best = -best if best is not None else None
  else:
    best, _ = bisect(within, lo, hi, judge.search.tolerance, DIGITS[structure])
  out = {"chain": chain, "structure": structure, "width": candidates[0]["width"],
         "fingerprint": fp, "best_value": best, "candidates": candidates,
         "wall_seconds": round(time.time() - start, 1), "finished": rundir.now()}
  rundir.write_json(_chain_path(judge.workdir, chain), out)
  return out


def ensure_teacher(config: PipelineConfig, search: SearchConfig, workdir: str, log=None,
                   wait_seconds: float = 86400.0, poll_seconds: float = 2.0) -> None:
  """Task 0 (or a lone process) trains or reuses the teacher; the other tasks wait for it."""
  if search.task_index == 0:
    pipeline.run(dataclasses.replace(config, until=TEACHER), workdir, log=log)
    return
  run_dir = rundir.RunDir(workdir)
  fp = rundir.fingerprint(pipeline.STAGES[TEACHER].fingerprint_inputs(config.teacher, workdir))
  deadline = time.time() + wait_seconds
  said = False
  while not run_dir.is_done(TEACHER, fp):
    entry = run_dir.entry(TEACHER) or {}
    if entry.get("status") == "failed" and entry.get("fingerprint") == fp:
      raise StageError(NAME, "the teacher failed in %s (%s); fix it and rerun task 0" % (
          run_dir.workdir, entry.get("error")))
    if time.time() > deadline:
      raise StageError(NAME, "task %d waited %.0f s for task 0's teacher in %s" % (
          search.task_index, wait_seconds, run_dir.workdir))
    if not said:
      (log or progress.say)("[%s] task %d waits for task 0's teacher" % (NAME, search.task_index))
      said = True
    time.sleep(poll_seconds)


def run(config: PipelineConfig, search: SearchConfig, workdir: str, log=None,
        auto_collect: bool = True) -> Optional[dict]:
  """This task's chains; then, when every chain of the space is done, :func:`collect`.

  Returns ``search.json``'s content once collected, else None (other tasks still running).
  """
  log = log or progress.say
  validate(config, search)
  rundir.check_workdir(workdir)
  ensure_teacher(config, search, workdir, log=log)
  judge = _Judge(config, search, workdir)
  for line in judge.budget_lines():
    (progress.warn if "warning:" in line else log)(line)
  fp = fingerprint(config, search, workdir)
  for structure, width in search.my_chains():
    run_chain(judge, structure, width, fp, log)
  missing = _missing(config, search, workdir, fp)
  if missing:
    log("[%s] task %d done; waiting for chain(s) %s of other tasks (then any task's last "
        "finisher, or --collect, picks the best)" % (NAME, search.task_index, ", ".join(missing)))
    return None
  return collect(config, search, workdir, log=log) if auto_collect else None


def _missing(config, search, workdir, fp) -> List[str]:
  names = [chain_name(config, s, w) for s, w in search.chains()]
  return [n for n in names if _read_chain(workdir, n, fp) is None]


# A budget of fewer validation examples than this is within one run's noise: said in a warning.
FEW_EXAMPLES = 3.0

# Figures this close to the smallest count as a tie, which the better validation figure breaks:
# a gzipped file moves by a few bytes between processes (the traced functions' names in the
# file), and batch-1 latency by a few percent between runs.
TIES = {"size": 0.01, "latency": 0.05}


def choose(within, objective: str, metric: str, higher: bool, by_score: bool = False):
  """The best of the candidates ``within`` budget: the smallest (or fastest) up to :data:`TIES`,
  then the best validation figure, then the name; ``by_score`` (a size budget): the best
  validation figure, then the smallest file, then the name."""
  if not within:
    return None
  if by_score:
    return min(within, key=lambda c: (-c["val_" + metric] if higher else c["val_" + metric],
                                      c["tflite_gzip_bytes"], c["student"]))
  figure = lambda c: c["tflite_gzip_bytes"] if objective == "size" else c["latency_ms"]  # noqa: E731
  least = min(figure(c) for c in within)
  tied = [c for c in within if figure(c) <= least * (1 + TIES[objective])]
  return min(tied, key=lambda c: (-c["val_" + metric] if higher else c["val_" + metric],
                                  figure(c), c["student"]))


def collect(config: PipelineConfig, search: SearchConfig, workdir: str, log=None) -> dict:
  """Picks the best of every finished chain; writes ``search/`` (``search.json``, ``search.md``,
  ``pareto.png``, ``best/``) and returns ``search.json``'s content."""
  log = log or progress.say
  search.validate(config.student.data.task)
  fp = fingerprint(config, search, workdir)
  missing = _missing(config, search, workdir, fp)
  if missing:
    raise ConfigError("--collect: chain(s) %s of this search are not finished in %s" % (
        ", ".join(missing), rundir.RunDir(workdir).workdir))
  run_dir = rundir.RunDir(workdir)
  judge = _Judge(config, search, workdir)
  m = judge.metric
  chains = [_read_chain(workdir, chain_name(config, s, w), fp) for s, w in search.chains()]
  candidates = [c for ch in chains for c in ch["candidates"]]
  exported = [c for c in candidates if c["abandoned"] is None]
  within = [c for c in exported if c["within_budget"]]
  best = choose(within, search.objective, m, judge.higher, by_score=bool(judge.max_bytes))
  teacher = run_dir.entry(TEACHER)["metrics"]
  reference = None
  for c in exported:  # the float teacher's .tflite, as every export measured it (test split)
    ref = {x["name"]: x for x in sweep.read_report(workdir, c["student"])["models"]}.get(
        "teacher_float")
    if ref:
      reference = ref
      break
  out = {
      "workdir": run_dir.workdir, "objective": search.objective, "budget": judge.budget(),
      "space": {k: list(v) if isinstance(v, tuple) else v for k, v in search.space().items()},
      "teacher": {"val_" + m: teacher["val_" + m], "test_" + m: teacher.get("test_" + m),
                  "tflite_gzip_bytes": reference and reference["tflite_gzip_bytes"],
                  "tflite_test_" + m: reference and reference["test_" + m],
                  "latency_ms": reference and reference["latency_ms"]},
      "best": None, "candidates": candidates, "students_trained": len(candidates),
      "students_exported": len(exported),
      "chains": [{k: ch[k] for k in ("chain", "structure", "width", "best_value",
                                     "wall_seconds")} | {"tried": [c["value"] for c in
                                                                  ch["candidates"]]}
                 for ch in chains],
      "wall_seconds": round(sum(ch["wall_seconds"] for ch in chains), 1),
      "score": {"key": "val_" + m, "label": judge.label, "higher_is_better": judge.higher},
  }
  directory = run_dir.stage_dir(NAME)
  best_dir = os.path.join(directory, "best")
  with run_dir.locked(COLLECT_LOCK):  # parallel tasks finishing together: one collector at a time
    if best is not None:
      out["best"] = dict(best, name=best["student"],
                         export=os.path.join("export", best["student"]))
      # The budget read on test, reported: against the teacher's .tflite, else its Keras figure.
      reference_test = out["teacher"]["tflite_test_" + m]
      if reference_test is None:
        reference_test = out["teacher"]["test_" + m]
      if judge.higher and reference_test is not None and not judge.max_bytes:
        out["best"]["test_drop"] = round(100.0 * (reference_test - best["test_" + m]), 4)
        out["best"]["test_over_budget"] = out["best"]["test_drop"] > search.max_drop + 1e-9
      with rundir.atomic_path(best_dir) as tmp:
        shutil.copytree(run_dir.stage_dir(stage_of("export", best["student"])), tmp)
        rundir.write_json(os.path.join(tmp, "choice.json"), out["best"])
    elif os.path.isdir(best_dir):
      shutil.rmtree(best_dir)  # an earlier search's choice is no answer to this one
    rundir.write_json(os.path.join(directory, "search.json"), out)
    rundir.atomic_write(os.path.join(directory, "search.md"), markdown(out))
    if exported:
      pareto_lib.plot(_plot_view(out, exported, m), os.path.join(directory, "pareto.png"))
  if best is None:
    log("[%s] no candidate is within budget (%s): see %s" % (
        NAME, judge.budget()["reference"], os.path.join(directory, "search.md")))
  else:
    log("[%s] best: %s, int8 validation %s %.5g, test %.5g, %d B gzipped -> %s" % (
        NAME, best["student"], judge.label, best["val_" + m], best["test_" + m],
        best["tflite_gzip_bytes"], best_dir))
    if out["best"].get("test_over_budget"):
      progress.warn("[%s] warning: on test, %s is %.2f points below the float teacher (int8 "
                    "test %s %.5g): beyond --max_drop=%g, which it met on validation" % (
                        NAME, best["student"], out["best"]["test_drop"], judge.label,
                        best["test_" + m], search.max_drop))
  return out


def _plot_view(out: dict, exported: List[dict], m: str) -> dict:
  points = [dict(c) for c in exported]
  pareto_lib.pareto(points, "val_" + m, out["score"]["higher_is_better"])
  t = out["teacher"]
  return {"students": points, "score": out["score"], "program": "kdprune search",
          "teacher": ({"val_" + m: t["val_" + m], "tflite_gzip_bytes": t["tflite_gzip_bytes"]}
                      if t["tflite_gzip_bytes"] else None)}


def markdown(out: dict) -> str:
  key = out["score"]["key"]
  m = key[len("val_"):]
  pct = m == "accuracy"

  def fmt(v):
    return "-" if v is None else ("%.2f%%" % (100 * v) if pct else "%.5g" % v)

  b = out["budget"]
  if "max_gzip_bytes" in b:
    budget = ("Budget: at most {:,} bytes gzipped; objective: the best validation %s (%s)."
              .format(b["max_gzip_bytes"]) % (out["score"]["label"], b["reference"]))
  else:
    budget = "Budget: at most %s %s below the float teacher (%s); objective: smallest %s." % (
        b["max_drop"], b["unit"], b["reference"],
        "gzipped .tflite" if out["objective"] == "size" else "batch-1 latency")
  lines = ["# kdprune search", "", budget + " Candidates are judged by their int8 .tflite on "
           "the validation split; test figures are reported, never used to choose."]
  if "examples" in b:
    lines += ["The budget is %.1f of the %d validation examples%s." % (
        b["examples"], b["validation_examples"], "; fewer than %g is within one run's noise: "
        "raise --validation_fraction" % FEW_EXAMPLES if b["examples"] < FEW_EXAMPLES else "")]
  lines += [""]
  best = out["best"]
  if best:
    lines += ["**Best: %s**: int8 validation %s %s, test %s, %s B gzipped, %.3f ms." % (
        best["name"], out["score"]["label"], fmt(best[key]), fmt(best["test_" + m]),
        "{:,}".format(best["tflite_gzip_bytes"]), best["latency_ms"]), ""]
    if best.get("test_over_budget"):
      lines += ["**Warning**: on test it is %.2f points below the float teacher, beyond the "
                "budget it met on validation." % best["test_drop"], ""]
  else:
    lines += ["**No candidate is within budget.**", ""]
  lines += ["%d students trained (%d exported) in %.1f s of chain time." % (
      out["students_trained"], out["students_exported"], out["wall_seconds"]), "",
            "| student | chain | value | float val | int8 val | drop | int8 test | gzip | "
            "latency (ms) | verdict |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  for c in out["candidates"]:
    verdict = ("abandoned after pruning" if c["abandoned"] else
               "within budget" if c["within_budget"] else "out of budget")
    lines.append("| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        c["student"], " **best**" if best and c["student"] == best["name"] else "", c["chain"],
        "-" if c["value"] is None else c["value"], fmt(c["float_val_" + m]), fmt(c.get(key)),
        c.get("drop", "-"), fmt(c.get("test_" + m)),
        "{:,}".format(c["tflite_gzip_bytes"]) if "tflite_gzip_bytes" in c else "-",
        "%.3f" % c["latency_ms"] if "latency_ms" in c else "-", verdict))
  t = out["teacher"]
  lines += ["", "Float teacher: validation %s %s, test %s (Keras)%s." % (
      out["score"]["label"], fmt(t[key]), fmt(t["test_" + m]),
      "; its .tflite %s B gzipped, %.3f ms" % ("{:,}".format(t["tflite_gzip_bytes"]),
                                               t["latency_ms"]) if t["tflite_gzip_bytes"] else "")]
  return "\n".join(lines) + "\n"
