"""Per-phase wall time (pipelines/runtime/timing.py): laps, nested phases, the printed table."""

import time

import pytest

from pipelines.runtime import timing


def test_laps_and_blocks_add_up_to_the_wall_time():
  t = timing.Phases()
  time.sleep(0.02)
  t.lap("data")
  with t.phase("evaluation"):  # a block inside the next lap's span is not counted twice
    time.sleep(0.03)
  time.sleep(0.01)
  t.lap("training")
  with t.phase("conversion"):
    time.sleep(0.01)
    with t.phase("latency"):  # nested: the outer phase excludes the inner one
      time.sleep(0.02)
  with t.phase("evaluation"):  # entered twice: accumulates
    time.sleep(0.01)
  s = t.summary()
  assert s["data"] == pytest.approx(0.02, abs=0.015)
  assert s["training"] == pytest.approx(0.01, abs=0.015)
  assert s["evaluation"] == pytest.approx(0.04, abs=0.015)
  assert s["conversion"] == pytest.approx(0.01, abs=0.015)
  assert s["latency"] == pytest.approx(0.02, abs=0.015)
  assert s["total"] == pytest.approx(sum(v for k, v in s.items() if k != "total"), abs=0.002)
  assert list(s)[:-2] == [p for p in timing.PHASES if p in s]  # the table's order


def test_unknown_phase_is_refused():
  with pytest.raises(ValueError, match="unknown phase 'fitting'"):
    timing.Phases().lap("fitting")


def test_module_level_timer_is_replaced_per_stage():
  first = timing.start()
  timing.lap("data")
  second = timing.start()
  assert timing.current() is second and "data" not in second.summary()
  assert "data" in first.summary()


def test_table_lists_ran_and_skipped_stages_with_a_total_row():
  rows = [("teacher", None),
          ("student/default", {"data": 1.0, "training": 10.0, "other": 0.5, "total": 11.5}),
          ("export/default", {"conversion": 3.25, "other": 0.0, "total": 3.25})]
  lines = timing.table(rows).splitlines()
  assert lines[0].split() == ["stage", "data", "training", "conversion", "other", "total"]
  assert lines[1].split() == ["teacher", "skipped"]
  assert lines[2].split() == ["student/default", "1.0", "10.0", "-", "0.5", "11.5"]
  assert lines[3].split() == ["export/default", "-", "-", "3.2", "-", "3.2"]
  assert lines[4].split() == ["all", "stages", "1.0", "10.0", "3.2", "0.5", "14.8"]
