"""The documents stay citable and free of diary: every ``BUILD_NOTES.md, "<heading>"`` (and
``docs/results.md, "<heading>"``) cited in the code names a heading that exists, and the notes,
the architecture and the results name no local path, no numbered work item and no date in a
heading."""

import os
import re

import pytest

from tests.conftest import REPO

NOTES = "BUILD_NOTES.md"
RESULTS = os.path.join("docs", "results.md")
DOCUMENTS = (NOTES, "ARCHITECTURE.md", RESULTS)
# Where the code cites the documents: source, tests, benchmarks, launchers, presets, packaging.
CODE_DIRS = ("pipelines", "models", "tests", "benchmarks", "launch")
CODE_FILES = ("setup.py", "setup.cfg")
CODE_SUFFIXES = (".py", ".cfg", ".sh", ".sbatch", ".yaml", ".md")

# `BUILD_NOTES.md, "Heading"` / `BUILD_NOTES "Heading"` / `docs/results.md, "Heading"`.
_CITATION = re.compile(r"(BUILD_NOTES(?:\.md)?|docs/results\.md),?\s+\"([^\"]+)\"")


def _read(rel):
  with open(os.path.join(REPO, rel), encoding="utf-8") as f:
    return f.read()


def headings(text):
  """The headings of a Markdown text, without their #'s (fenced code blocks skipped)."""
  out, fenced = [], False
  for line in text.splitlines():
    if line.startswith("```"):
      fenced = not fenced
    elif not fenced and re.match(r"#{1,6} ", line):
      out.append(line.lstrip("#").strip())
  return out


def citations(text):
  """(document, heading) for every citation in ``text``; a citation may run over comment or
  docstring lines (``# "Pitfall: a\\n  # process"`` reads as one)."""
  joined = re.sub(r"\s*\n\s*(?:#+\s*)?", " ", text)
  return [(NOTES if doc.startswith("BUILD_NOTES") else RESULTS, " ".join(heading.split()))
          for doc, heading in _CITATION.findall(joined)]


def _code_files():
  for rel in CODE_FILES:
    yield rel
  for top in CODE_DIRS:
    for root, dirs, files in os.walk(os.path.join(REPO, top)):
      dirs[:] = [d for d in dirs if d != "__pycache__"]
      for name in files:
        if name.endswith(CODE_SUFFIXES):
          yield os.path.relpath(os.path.join(root, name), REPO)


def test_citations_are_found_across_comment_lines():
  text = ('# as measured (BUILD_NOTES.md, "Pitfall: a process\n'
          '  # exiting inside the last collective"); see also\n'
          '  BUILD_NOTES "Decision: one\n  training loop" and docs/results.md, "The test suite".')
  assert citations(text) == [
      (NOTES, "Pitfall: a process exiting inside the last collective"),
      (NOTES, "Decision: one training loop"),
      (RESULTS, "The test suite")]


def test_every_citation_in_the_code_names_a_heading_that_exists():
  known = {doc: set(headings(_read(doc))) for doc in (NOTES, RESULTS)}
  cited, missing = 0, []
  for rel in _code_files():
    if rel == os.path.join("tests", "test_notes.py"):
      continue  # its own examples
    for doc, heading in citations(_read(rel)):
      cited += 1
      if heading not in known[doc]:
        missing.append('%s cites %s, "%s"' % (rel, doc, heading))
  assert not missing, "\n".join(missing)
  assert cited >= 10  # the code does cite the notes: the scan found them


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_the_document_names_no_local_path_work_item_or_dated_heading(doc):
  text = _read(doc)
  problems = []
  for number, line in enumerate(text.splitlines(), 1):
    for path in re.findall(r"(?<![\w.])/(?:work|tmp|home)/\S*", line):
      problems.append("line %d: local path %s" % (number, path))
    for item in re.findall(r"\bissues? #?\d+", line, flags=re.IGNORECASE):
      problems.append("line %d: numbered work item %r" % (number, item))
  for heading in headings(text):
    if re.search(r"\b\d{4}-\d{2}-\d{2}\b|\b(?:19|20)\d{2}\b", heading):
      problems.append("dated heading %r" % heading)
  assert not problems, "\n".join(problems)
  assert headings(text), "%s has no headings" % doc


def test_the_documents_references_name_headings_that_exist():
  """Inside the documents: a quoted "Decision: ..." or "Pitfall: ..." is a BUILD_NOTES.md record,
  and ``docs/results.md, "..."`` / ``ARCHITECTURE.md, "..."`` name one of their headings."""
  known = {doc: set(headings(_read(doc))) for doc in DOCUMENTS}
  missing = []
  for doc in DOCUMENTS:
    text = " ".join(_read(doc).split())
    for name in re.findall(r"\"((?:Decision|Pitfall): [^\"]+)\"", text):
      if name not in known[NOTES]:
        missing.append('%s: "%s" is no record of %s' % (doc, name, NOTES))
    for target, name in re.findall(r"(docs/results\.md|ARCHITECTURE\.md),? \"([^\"]+)\"", text):
      if name not in known[os.path.normpath(target)]:
        missing.append('%s cites %s, "%s"' % (doc, target, name))
  assert not missing, "\n".join(missing)
