"""The board's instruction counts do not regress: `bench/baseline.py` against the committed
bench/board_baseline.json (counts under qemu -icount are exact, so this is not a timing test),
and the comparison itself on made-up figures."""

import importlib.util
import json
import subprocess
import sys

import pytest

from .helpers import ROOT, require_emulated

spec = importlib.util.spec_from_file_location("bench_baseline", ROOT / "bench" / "baseline.py")
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)

RESULT = {
    "cortex-m0": {
        "insn_per_tick": 1562.5,
        "spin_insn": 10.01,
        "predict_insn": {"42-32-16-7": {"portable": 2849750, "viper": 145111}},
        "mac_insn": {"42-32-16-7": {"viper": 60.6}},
        "train_insn": {"all": {"42-32-16-7": {"viper": 507233}}},
        "hop_insn": 171307,
        "app_held": {"off": 51792},
    }
}


def test_figures_are_the_instruction_counts():
    assert baseline.figures(RESULT) == {
        "cortex-m0 predict 42-32-16-7 portable": 2849750,
        "cortex-m0 predict 42-32-16-7 viper": 145111,
        "cortex-m0 train all 42-32-16-7 viper": 507233,
        "cortex-m0 app hop": 171307,
    }


def test_anything_but_a_board_result_is_refused():
    for bad in ([1], {"cortex-m0": 3}, "x"):
        with pytest.raises(ValueError, match="one object per CPU"):
            baseline.figures(bad)


def test_compare_flags_a_regression_of_more_than_ten_percent():
    base = baseline.figures(RESULT)
    now = dict(base)
    now["cortex-m0 app hop"] = int(171307 * 1.09)  # within 10 %
    now["cortex-m0 predict 42-32-16-7 viper"] = int(145111 * 1.11) + 1
    now["cortex-m0 predict 42-32-16-7 portable"] = int(2849750 * 0.5)
    del now["cortex-m0 train all 42-32-16-7 viper"]
    regressed, faster, missing, rows = baseline.compare(base, now)
    assert regressed == ["cortex-m0 predict 42-32-16-7 viper"]
    assert faster == ["cortex-m0 predict 42-32-16-7 portable"]
    assert missing == ["cortex-m0 train all 42-32-16-7 viper"]
    text = baseline.report(regressed, faster, missing, rows)
    assert "REGRESSED by more than 10 %: cortex-m0 predict 42-32-16-7 viper" in text
    assert "NOT MEASURED: cortex-m0 train all 42-32-16-7 viper" in text
    assert baseline.compare(base, base)[:3] == ([], [], [])


def test_the_committed_baseline_names_every_quick_figure():
    """The baseline file is bench/baseline.py's own output: the quick run's figure names."""
    committed = json.loads(baseline.BASELINE.read_text())
    heads = ["cortex-m0 " + w for w in baseline.COUNTS.values()]
    for name, value in committed.items():
        assert any(name == h or name.startswith(h + " ") for h in heads), name
        assert isinstance(value, (int, float)) and value > 0, (name, value)
    assert "cortex-m0 app hop" in committed
    assert "cortex-m0 train all 42-32-16-7 viper" in committed


@pytest.mark.emulated
def test_board_counts_within_ten_percent_of_the_baseline():
    require_emulated("cortex-m0")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "baseline.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "REGRESSED" not in done.stdout
