"""One process of the two-worker ``execute`` tests in tests/test_distribute.py.

  TF_CONFIG=... python -m tests.multiworker_execute MODE WORKDIR OUT_JSON

``race``: the chief is slow to mark the stage running; every worker records the manifest entry its
``run_fn`` sees. ``fail``: a non-collective stage that fails on the chief. ``worker_fails``: a
collective stage that fails on the non-chief worker while the chief waits in a collective.
A stage's failure is recorded (``error``) and printed in one line, as the entry points print it.
"""

import json
import sys
import time

from pipelines.config.errors import StageError
from pipelines.runtime import distribute, execute, rundir

STAGE = "stage"
INPUTS = {"flag": 2}  # the "changed flag": the manifest the tests prepare holds {"flag": 1}


def main(mode: str, workdir: str, out: str) -> None:
  distribute.init("multi_worker")
  chief = distribute.is_chief()
  seen = {}

  def run_fn(config, wd):
    del config
    entry = rundir.RunDir(wd).entry(STAGE) or {}
    seen.update(status=entry.get("status"), fingerprint=entry.get("fingerprint"))
    if mode == "fail" and chief:
      raise RuntimeError("the chief fails on purpose")
    if mode == "worker_fails":
      if not chief:
        raise ValueError("the worker fails on purpose")
      distribute.barrier()  # the chief in a collective of the stage: it fails when the worker leaves
    if mode == "race":
      # A collective stage's training waits for every worker (without one, a chief on a fast
      # machine marked the stage done before a slow worker had read its decision).
      distribute.barrier()
    return execute.StageResult(artifacts={}, metrics={})

  if mode == "race" and chief:
    original = rundir.RunDir.mark_running

    def slow_mark_running(self, *args, **kwargs):
      time.sleep(3)  # a slow shared filesystem: the workers must not decide before this
      return original(self, *args, **kwargs)
    rundir.RunDir.mark_running = slow_mark_running
  error = None
  try:
    execute.execute(STAGE, run_fn, None, workdir, INPUTS, validate=lambda: None,
                    log=lambda *_: None, collective=mode != "fail")
    distribute.finish()  # as the entry points end (pipelines/cli/app.py)
  except StageError as e:
    error = str(e)
    sys.stderr.write("error: %s\n" % " ".join(error.split()))  # as pipelines/cli/app.py does
  finally:
    with open(out, "w") as f:
      json.dump({"chief": chief, "seen": seen, "error": error}, f)
  if error is not None:
    sys.exit(1)


if __name__ == "__main__":
  main(*sys.argv[1:4])
