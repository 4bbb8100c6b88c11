"""The documents: the flags reference is generated and current, every flag is in it, the README
is a landing page that keeps CI's commands, the site's pages are all in its nav, and no
document carries a machine path, a numbered work item or a dated heading.

No TensorFlow: the flags are listed by a subprocess that imports only the flag definitions.
"""

import glob
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")

# Every flag a kdprune module defines once every entry point has defined its flags; the
# modules are the entry points' own (pipelines.cli.*), so a flag defined outside
# pipelines/cli/flags.py is caught too.
_LIST_FLAGS = r"""
import importlib, json, pkgutil, sys
from absl import flags
import pipelines.cli
from pipelines.cli import flags as kflags
for m in pkgutil.iter_modules(pipelines.cli.__path__):
  importlib.import_module("pipelines.cli." + m.name)
kflags.define_flags()
kflags.define_predict_flags()
app_flags = __import__("absl.app", fromlist=["app"])
app_flags.define_help_flags()
by_module = flags.FLAGS.flags_by_module_dict()
names = sorted({f.name for module, fl in by_module.items()
                if module.startswith(("pipelines", "models")) for f in fl})
absl = sorted({f.name for module, fl in by_module.items() if module.startswith("absl")
               for f in fl})
print(json.dumps({"flags": names, "absl": absl, "tensorflow": "tensorflow" in sys.modules}))
"""

# Flags the documents name that are not kdprune's: other tools' (mkdocs, tensorboard, sbatch),
# the benchmarks' own, and the placeholder of kdprune's own message ("flags look like
# --name=value").
_OTHER_TOOLS = {"strict", "logdir", "nodes", "requeue", "student_seeds", "name", "config"}


def _benchmark_flags():
  """The flags the benchmark scripts define, with absl or argparse (read from their source: importing them loads
  TensorFlow)."""
  names = set()
  for name in os.listdir(os.path.join(REPO, "benchmarks")):
    if name.endswith(".py"):
      source = _read(os.path.join(REPO, "benchmarks", name))
      names.update(re.findall(r"DEFINE_[a-z_]+\(\s*\"([a-z0-9_]+)\"", source))  # absl
      names.update(re.findall(r"add_argument\(\s*\"--([a-z0-9_]+)\"", source))  # argparse
  return names


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def _documents():
  paths = [os.path.join(REPO, "README.md"), os.path.join(REPO, "ARCHITECTURE.md")]
  paths += sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
  return [p for p in paths if os.path.exists(p)]


def test_flags_reference_is_current():
  out = subprocess.run([sys.executable, os.path.join(DOCS, "gen_flags.py"), "--check"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr + out.stdout


def _flags():
  out = subprocess.run([sys.executable, "-c", _LIST_FLAGS], cwd=REPO, capture_output=True,
                       text=True, timeout=120, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_flag_is_in_the_reference():
  listed = _flags()
  assert not listed["tensorflow"], "defining the flags imported TensorFlow"
  names = listed["flags"]
  assert len(names) > 100 and {"workdir", "teacher_path", "student_path", "model"} <= set(names)
  reference = _read(os.path.join(DOCS, "flags.md"))
  rows = set(re.findall(r"^\| `--([a-z0-9_]+)`", reference, re.M))
  missing = [n for n in names if n not in rows]
  assert not missing, "docs/flags.md lacks %s: run python docs/gen_flags.py" % missing


def test_every_flag_the_documents_name_exists():
  listed = _flags()
  known = set(listed["flags"]) | set(listed["absl"]) | {"flagfile", "undefok"} | _OTHER_TOOLS
  known |= _benchmark_flags()
  unknown = []
  for path in _documents():
    if path.endswith(os.path.join("docs", "flags.md")):
      continue
    for match in re.finditer(r"(?<![\w-])--([a-z][a-z0-9_]*[a-z0-9])(?![\w<])", _read(path)):
      name = match.group(1)
      if name not in known and not (name.startswith("no") and name[2:] in known):
        unknown.append("%s: --%s" % (os.path.relpath(path, REPO), name))
  assert not unknown, "documents name flags that do not exist: %s" % unknown


def test_readme_is_a_landing_page_with_the_ci_commands():
  readme = _read(os.path.join(REPO, "README.md"))
  assert len(readme.splitlines()) <= 200
  ci = [line.strip() for line in _read(os.path.join(REPO, ".ci", "run")).splitlines()
        if line.strip().startswith("pip install -e")]
  assert len(ci) >= 2
  for command in ci:  # CI runs the README's commands verbatim
    assert "    %s\n" % command in readme, command
  assert "```mermaid" in readme
  # The guide pages a newcomer needs first are one click away.
  for page in ("docs/guide/models.md", "docs/guide/data.md", "docs/results.md",
               "docs/flags.md"):
    assert "(%s" % page in readme, page


def test_every_page_is_in_the_nav_and_every_link_resolves():
  nav = _read(os.path.join(REPO, "mkdocs.yml"))
  pages = [os.path.relpath(p, DOCS) for p in glob.glob(os.path.join(DOCS, "**", "*.md"),
                                                      recursive=True)]
  assert len([p for p in pages if p.startswith("guide" + os.sep)]) >= 8
  for page in pages:
    assert re.search(r":\s*%s\s*$" % re.escape(page.replace(os.sep, "/")), nav, re.M), (
        "%s is not in mkdocs.yml's nav" % page)
  for path in _documents():
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", _read(path)):
      if "://" in target:
        continue
      assert os.path.exists(os.path.join(os.path.dirname(path), target)), (
          "%s links to %s, which does not exist" % (os.path.relpath(path, REPO), target))


# A machine's own paths, a numbered work item, a dated heading.
_FORBIDDEN = (
    (re.compile(r"(?<![\w.~-])/(?:work|tmp|home|root|Users|scratch)/"), "a local path"),
    (re.compile(r"\bissues? #?\d+", re.I), "a numbered work item"),
    (re.compile(r"^#+ .*\b\d{4}-\d{2}-\d{2}\b", re.M), "a dated heading"),
)


def test_documents_hold_no_local_path_work_item_or_dated_heading():
  found = []
  for path in _documents():
    text = _read(path)
    for pattern, what in _FORBIDDEN:
      for match in pattern.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append("%s:%d: %s (%r)" % (os.path.relpath(path, REPO), line, what, match.group()))
  assert not found, "\n".join(found)


def test_the_scan_finds_what_it_looks_for():
  samples = {"see /tmp/qs/report.md": 0, "as in issue 17's fix": 1, "## Quickstart (2026-12-02)": 2}
  for text, index in samples.items():
    assert _FORBIDDEN[index][0].search(text), text
  assert not any(p.search("--dataset=npz:/path/data.npz in runs/tmp/x") for p, _ in _FORBIDDEN)
