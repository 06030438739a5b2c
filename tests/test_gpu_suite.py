"""benchmarks/gpu_suite.py --smoke runs end to end on CPU (so the GPU suite cannot rot)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.mark.slow
def test_gpu_suite_smoke_prints_a_full_table():
    spec = importlib.util.spec_from_file_location("_lidmem_gpu_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.main(["--smoke", "--budget-s", "1e9"])
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    header, body = lines[0], lines[1:]
    assert "FLIPD fwd ms" in header and "score rows/s" in header and "A^FLIPD" in header
    # two networks x fp32 x compile off/on, every cell measured (no error, nothing skipped)
    assert len(body) == 4
    assert "err:" not in text and "skipped" not in text
    for line in body:
        cells = [c.strip() for c in line.strip("|").split("|")]
        fwd = float(cells[4])
        assert fwd > 0
        # both AD modes measured, with their ratio to the forward (a timing on tiny CPU models: the
        # value itself is the benchmark's to report, not the test's to bound)
        for c in (cells[5], cells[6]):
            ms, ratio = c.split(" (")
            assert float(ms) > 0 and float(ratio.rstrip("x)")) > 0
        assert float(cells[8]) > 0  # score rows/s
    sd_rows = [ln for ln in body if ln.startswith("| SD1.5")]
    assert all(float(r.strip("|").split("|")[7]) > 0 and float(r.strip("|").split("|")[10]) > 0 for r in sd_rows)
