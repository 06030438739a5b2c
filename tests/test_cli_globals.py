"""Global CLI options (--threads, --version), `lidmem weights`, plain progress lines without a
terminal, and the report helpers' number formatting."""

import io
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lidmem.cli.main import app


def test_version_and_weights():
    runner = CliRunner()
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("lidmem ")
    res = runner.invoke(app, ["weights"])
    assert res.exit_code == 0
    rows = dict(line.split("\t") for line in res.output.strip().splitlines())
    assert {"vonmises", "digits_unet", "digits_generator", "text2image"} <= set(rows)
    from pathlib import Path

    assert Path(rows["vonmises"]).is_file() and (Path(rows["text2image"]) / "unet").is_dir()


def test_threads_option_sets_torch_threads():
    runner = CliRunner()
    before = torch.get_num_threads()
    try:
        res = runner.invoke(app, ["--threads", "2", "weights"])
        assert res.exit_code == 0 and torch.get_num_threads() == 2
        res = runner.invoke(app, ["weights"])  # default: 1 thread
        assert res.exit_code == 0 and torch.get_num_threads() == 1
        res = runner.invoke(app, ["weights"], env={"LIDMEM_THREADS": "2"})
        assert res.exit_code == 0 and torch.get_num_threads() == 2
        assert runner.invoke(app, ["--threads", "-1", "weights"]).exit_code == 2
    finally:
        torch.set_num_threads(before)


def test_plain_progress_lines_when_not_a_terminal(monkeypatch):
    import time

    from lidmem.utils import progress

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)  # not a tty
    monkeypatch.setenv("LIDMEM_PROGRESS_INTERVAL", "0.05")
    for _ in progress(range(4), desc="work"):
        time.sleep(0.06)
    lines = buf.getvalue().strip().splitlines()
    assert lines and all(line.startswith("work: ") for line in lines) and "\r" not in buf.getvalue()
    assert lines[-1].startswith("work: 4/4 (100%)")
    buf.truncate(0)
    buf.seek(0)
    monkeypatch.setenv("LIDMEM_PROGRESS_INTERVAL", "30")
    for _ in progress(range(4), desc="quick"):
        pass
    assert buf.getvalue() == ""  # loops shorter than the interval print nothing


def test_report_number_formatting():
    import pandas as pd

    from lidmem.reports.html import format_value, table_to_html

    assert format_value(900) == "900" and format_value(np.int64(3)) == "3"
    assert format_value(0.12345678901234567) == "0.123" and format_value(float("nan")) == ""
    assert format_value(True) == "yes" and format_value({1: 0.5}) == "1: 0.500"
    html = table_to_html(pd.DataFrame({"metric": ["a", "b"], "n": [900.0, 12.0], "auroc": [1.0, 0.98765]}))
    assert "900.000" not in html and ">900<" in html and ">0.988<" in html and ">1.000<" in html


def test_rich_help_keeps_brackets():
    res = CliRunner().invoke(app, ["t2i", "attribute", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "[flipd_t_min, flipd_t_max]" in res.output
