"""``kdprune-search``: the smallest (or fastest) int8 student within an accuracy budget
(``python -m pipelines.cli.search``).

  kdprune-search --workdir=runs/search --max_drop=0.5
  kdprune-search --workdir=runs/search --max_drop=0.5 --parallel=2        # two local processes
  kdprune-search --workdir=runs/search --max_drop=0.5 --task_index=1 --num_tasks=4   # one task
  kdprune-search --workdir=runs/search --max_drop=0.5 --collect           # pick the best

See :mod:`pipelines.stages.search`; ``launch/search_slurm.sbatch`` and
``launch/k8s/search-indexed-job.yaml`` run the tasks on a cluster.
"""

import dataclasses
import os
import subprocess
import sys

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.config.errors import ConfigError, StageError
from pipelines.runtime import distribute, progress, rundir
from pipelines.stages import search

PROGRAM = "kdprune-search"
_TASK_FLAGS = ("parallel", "task_index", "num_tasks", "collect", "search_auto_collect")


def child_argv(argv, index: int, count: int):
  """The command of local task ``index`` of ``count``: this one's flags, its own task flags."""
  kept = [a for a in argv[1:] if a.lstrip("-").split("=")[0].removeprefix("no")
          not in _TASK_FLAGS]
  return [sys.executable, "-m", "pipelines.cli.search"] + kept + [
      "--task_index=%d" % index, "--num_tasks=%d" % count, "--parallel=1",
      "--nosearch_auto_collect"]


def _parallel(base, config, workdir, n: int):
  search.ensure_teacher(base, config, workdir)  # once, before the tasks start
  logs = os.path.join(os.path.abspath(workdir), search.NAME, "logs")
  os.makedirs(logs, exist_ok=True)
  children = []
  for i in range(n):
    path = os.path.join(logs, "task-%d.log" % i)
    with open(path, "w") as f:
      children.append((i, path, subprocess.Popen(child_argv(sys.argv, i, n), stdout=f,
                                                 stderr=subprocess.STDOUT)))
    progress.say("[%s] task %d of %d started (pid %d) -> %s" % (
        search.NAME, i, n, children[-1][2].pid, path))
  failed = []
  for i, path, child in children:
    if child.wait() != 0:
      failed.append((i, path, child.returncode))
  if failed:
    with open(failed[0][1]) as f:
      last = [l.strip() for l in f.read().splitlines() if l.strip()][-1:] or ["(no output)"]
    raise StageError(search.NAME, "task(s) %s failed (exit %s); %s: %s" % (
        ", ".join(str(i) for i, _, _ in failed), ", ".join(str(rc) for _, _, rc in failed),
        failed[0][1], last[0]))
  return search.collect(base, dataclasses.replace(config, task_index=0, num_tasks=1), workdir)


def main(argv):
  del argv
  f = kflags.FLAGS
  base = kflags.pipeline_config_from_flags()
  config = kflags.search_config_from_flags()
  if f.force:
    raise ConfigError("--force is not supported by %s: a search reuses its finished students; "
                      "use a fresh --workdir to start over" % PROGRAM)
  if f.parallel < 1:
    raise ConfigError("--parallel=%d must be >= 1" % f.parallel)
  if f.parallel > 1 and (f["task_index"].present or f["num_tasks"].present or f.collect):
    raise ConfigError("--parallel=%d runs its own tasks: drop --task_index, --num_tasks and "
                      "--collect" % f.parallel)

  def validate():
    search.validate(base, config)
    rundir.check_workdir(f.workdir)

  distribute.setup(f.strategy, validate)
  if f.collect:
    out = search.collect(base, config, f.workdir)
  elif f.parallel > 1:
    out = _parallel(base, config, f.workdir, f.parallel)
  else:
    out = search.run(base, config, f.workdir, auto_collect=f.search_auto_collect)
  if out is not None:
    print()
    print(search.markdown(out))
    print("search -> %s" % os.path.join(out["workdir"], search.NAME))


def entry_point():
  app.entry(main, PROGRAM)


if __name__ == "__main__":
  entry_point()
