"""Bad inputs through the real CLI: exit code 2, ONE line on stderr naming the argument or the
file, no output written, and no model call (network forwards and model loaders are patched to
raise, so a check that came too late fails the test instead of costing minutes). Also: no
pickle is ever executed, concurrent runs on one --out, the ChatRewriter's transport rules,
float64 input at the estimator boundary and labels of the detection metrics."""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import lidmem
from lidmem.cli.main import app

WEIGHTS = Path(lidmem.__file__).parent / "weights"
DIGITS_UNET = WEIGHTS / "digits_unet.safetensors"  # score_model, data_shape (1, 8, 8)
VONMISES = WEIGHTS / "vonmises.safetensors"  # score_model, data_shape (2,)
T2I = WEIGHTS / "text2image"

runner = CliRunner()


class ModelCalled(AssertionError):
    pass


def _forbidden(*args, **kwargs):
    raise ModelCalled("a model was loaded or called before the inputs were validated")


LOADERS = (
    "lidmem.diffusion.checkpoint.load_score_model",
    "lidmem.diffusion.checkpoint.load_network",
    "lidmem.workflows.audit.load_audit_model",
    "lidmem.memorization.audit.audit_memorization",
    "lidmem.text2image.load_text2image",
    "lidmem.text2image.loading.load_text2image",
    "lidmem.models.load_model",  # the shared loader, where it exists
    "lidmem.estimators.flipd",
    "lidmem.estimators.normal_bundle",
)


@pytest.fixture
def no_model_calls(monkeypatch):
    """Any network forward (``nn.Module.__call__``) or model loader raises ModelCalled."""
    import importlib

    monkeypatch.setattr(torch.nn.Module, "__call__", _forbidden)
    for dotted in LOADERS:
        mod_name, _, attr = dotted.rpartition(".")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if hasattr(mod, attr):
            monkeypatch.setattr(mod, attr, _forbidden)


# --- inputs -----------------------------------------------------------------------------------
def _png_bytes(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(path: Path, n: int = 6) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(path / f"img{i:02d}.png")
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {}
    f["a_file"] = d / "a_file.txt"
    f["a_file"].write_text("I am a file\n")
    f["folder_named_csv"] = d / "result.csv"
    f["folder_named_csv"].mkdir()
    g = np.random.default_rng(0)
    f["csv"] = d / "points.csv"
    pd.DataFrame({"a": g.normal(size=30), "b": g.normal(size=30)}).to_csv(f["csv"], index=False)
    f["csv_text"] = d / "mixed.csv"
    pd.DataFrame({"a": g.normal(size=30), "name": [f"p{i}" for i in range(30)], "b": g.normal(size=30)}).to_csv(f["csv_text"], index=False)
    f["npy_empty"] = d / "empty.npy"
    f["npy_empty"].write_bytes(b"")
    nan = g.normal(size=(30, 2))
    nan[3, 1] = np.nan
    f["npy_nan"] = d / "nan.npy"
    np.save(f["npy_nan"], nan)
    imgs_nan = g.uniform(-1, 1, size=(20, 1, 8, 8)).astype(np.float32)
    imgs_nan[5, 0, 2, 2] = np.nan
    f["train_nan"] = d / "train_nan.npy"
    np.save(f["train_nan"], imgs_nan)
    f["train_ok"] = d / "train_ok.npy"
    np.save(f["train_ok"], g.uniform(-1, 1, size=imgs_nan.shape).astype(np.float32))
    f["good_imgs"] = _image_folder(d / "good_imgs")
    f["text_png"] = _image_folder(d / "text_png")
    (f["text_png"] / "img00.png").write_text("this is not an image\n")  # row 0: caught when the source opens
    f["trunc_png"] = _image_folder(d / "trunc_png")
    raw = (f["trunc_png"] / "img00.png").read_bytes()
    (f["trunc_png"] / "img00.png").write_bytes(raw[: len(raw) // 2])
    table = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "image": [b"garbage bytes"] + [_png_bytes(10 * i) for i in range(1, 6)]})
    f["parquet_bad"] = d / "bad.parquet"
    table.to_parquet(f["parquet_bad"])
    f["arrays_parquet"] = d / "arrays.parquet"
    pd.DataFrame({"x": [g.normal(size=64).astype(np.float32).tolist() for _ in range(6)]}).to_parquet(f["arrays_parquet"])
    # a checkpoint whose weights do not fit its network (lidmem metadata of the von Mises model)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(VONMISES), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    first = sorted(tensors)[0]
    tensors[first] = torch.zeros(3, 3)
    f["ckpt_mismatch"] = d / "mismatch.safetensors"
    save_file(tensors, str(f["ckpt_mismatch"]), metadata=meta)
    f["prompts"] = d / "prompts.txt"
    f["prompts"].write_text("a photo of a cat\na photo of a dog\n")
    f["ref_png"] = f["good_imgs"] / "img01.png"
    f["dir"] = d
    return f


def _outs(d: Path) -> dict[str, Path]:
    return {"new": d / "fresh_out", "under_file": d / "a_file.txt" / "sub", "file": d / "a_file.txt", "named_like_file": d / "result.csv"}


def _rows(f: dict[str, Path]) -> list[tuple[str, list[str], str, bool]]:
    """(id, argv, text the error line must contain, model loading allowed).

    Paths are filled in here so the table reads like the commands a user would type."""
    d = f["dir"]
    o = _outs(d)
    new = str(o["new"])
    unet, vm = str(DIGITS_UNET), str(VONMISES)
    audit = ["audit", "--model", unet, "--train", str(f["train_ok"]), "--out", new]
    mmh = ["mmh", "--model", vm, "--data", str(f["csv"]), "--out", new, "--k", "5", "--no-progress"]
    score = ["score", "--model", unet, "--data", str(f["good_imgs"]), "--out", new, "--no-progress"]
    lid = ["lid", str(f["csv"]), "--k", "5", "--no-progress"]
    si = ["t2i", "score-images", str(f["good_imgs"]), "--model", str(T2I), "--out", new, "--metrics", "flipd_uncond", "--no-progress"]
    dp = ["t2i", "detect-prompts", "--model", str(T2I), "--prompts", str(f["prompts"]), "--out", new, "--no-progress"]
    at = ["t2i", "attribute", "--model", str(T2I), "--prompt", "a photo of a cat", "--out", new]
    mi = ["t2i", "mitigate", "--model", str(T2I), "--prompt", "a photo of a cat", "--reference", str(f["ref_png"]), "--out", new]
    train = ["train", "--data", str(f["train_ok"]), "--out", str(d / "new_model.safetensors")]
    cuda_rows = [] if torch.cuda.is_available() else [
        ("mmh cuda on a CPU machine", mmh + ["--device", "cuda"], "--device", False),
        ("score cuda on a CPU machine", score + ["--device", "cuda:0"], "--device", False),
        ("t2i cuda on a CPU machine", si + ["--device", "cuda"], "--device", False),
    ]
    rows = [
        # 2. --out checked first, in every command
        ("audit out is a file", audit[:-1] + [str(o["file"])], "--out", False),
        ("audit out under a file", audit[:-1] + [str(o["under_file"])], "a_file.txt", False),
        ("mmh out is a file", mmh[:6] + [str(o["file"])] + mmh[7:], "--out", False),
        ("mmh out under a file", mmh[:6] + [str(o["under_file"])] + mmh[7:], "a_file.txt", False),
        ("score out is a file", score[:6] + [str(o["file"])] + score[7:], "--out", False),
        ("score out under a file", score[:6] + [str(o["under_file"])] + score[7:], "a_file.txt", False),
        ("lid out is a folder named like a file", lid + ["--out", str(o["named_like_file"])], "--out", False),
        ("lid out under a file", lid + ["--out", str(d / "a_file.txt" / "x.csv")], "a_file.txt", False),
        ("lid out with a wrong suffix", lid + ["--out", str(d / "x.txt")], "--out", False),
        ("t2i score-images out is a file", si[:-4] + [str(o["file"])] + si[-3:], "--out", False),
        ("t2i detect-prompts out under a file", dp[:-2] + [str(o["under_file"]), "--no-progress"], "a_file.txt", False),
        ("t2i attribute out is a file", at[:-1] + [str(o["file"])], "--out", False),
        ("t2i mitigate out is a file", mi[:-1] + [str(o["file"])], "--out", False),
        ("demo vonmises out is a file", ["demo", "vonmises", "--out", str(o["file"])], "--out", False),
        ("demo digits out under a file", ["demo", "digits", "--out", str(o["under_file"])], "a_file.txt", False),
        ("demo text2image out is a file", ["demo", "text2image", "--out", str(o["file"])], "--out", False),
        # 3. corrupt images: a text file named .png, a truncated PNG, a corrupt Parquet image cell
        ("lid text file named .png", ["lid", str(f["text_png"]), "--k", "2"], "img00.png", False),
        ("lid truncated png", ["lid", str(f["trunc_png"]), "--k", "2"], "img00.png", False),
        ("audit text file named .png", audit[:4] + [str(f["text_png"])] + audit[5:], "img00.png", False),
        ("audit truncated png samples", audit + ["--samples", str(f["trunc_png"])], "img00.png", False),
        ("score text file named .png", score[:4] + [str(f["text_png"])] + score[5:], "img00.png", False),
        ("score corrupt parquet image cell", score[:4] + [str(f["parquet_bad"])] + score[5:], "bad.parquet", False),
        ("t2i score-images truncated png", si[:2] + [str(f["trunc_png"])] + si[3:], "img00.png", False),
        # 4. options validated before any model call, with the option's own name
        ("audit --flipd-t0", audit + ["--flipd-t0", "5"], "--flipd-t0", False),
        ("audit --flipd-trace", audit + ["--flipd-trace", "bogus"], "--flipd-trace", False),
        ("audit --search", audit + ["--search", "bogus"], "--search", False),
        ("audit --nb-t0", audit + ["--nb-t0", "5"], "--nb-t0", False),
        ("audit thresholds", audit + ["--exact-threshold", "0.9", "--near-threshold", "0.5"], "--exact-threshold", False),
        ("audit --cos-threshold", audit + ["--cos-threshold", "2"], "--cos-threshold", False),
        ("audit NaN in the training .npy", audit[:4] + [str(f["train_nan"])] + audit[5:], "train_nan.npy", False),
        ("audit 0-byte training .npy", audit[:4] + [str(f["npy_empty"])] + audit[5:], "empty.npy", False),
        ("audit missing model", ["audit", "--model", str(d / "nope.safetensors"), "--train", str(f["train_ok"]), "--out", new], "nope.safetensors", False),
        ("mmh k > n", mmh[:-3] + ["--k", "1000", "--no-progress"], "--k", False),
        ("mmh --alpha", mmh + ["--alpha", "0"], "--alpha", False),
        ("mmh --t0", mmh + ["--t0", "5"], "--t0", False),
        ("mmh --trace", mmh + ["--trace", "bogus"], "--trace", False),
        ("mmh --tau-percentile", mmh + ["--tau-percentile", "120"], "--tau-percentile", False),
        ("mmh NaN in the data", mmh[:4] + [str(f["npy_nan"])] + mmh[5:], "nan.npy", False),
        ("mmh 0-byte .npy", mmh[:4] + [str(f["npy_empty"])] + mmh[5:], "empty.npy", False),
        ("mmh state_dict mismatch", ["mmh", "--model", str(f["ckpt_mismatch"]), "--data", str(f["csv"]), "--out", new, "--k", "5"], "mismatch.safetensors", True),
        ("score --t0", score + ["--t0", "0"], "--t0", False),
        ("score --metrics", score + ["--metrics", "bogus"], "--metrics", False),
        ("score --precision", score + ["--precision", "float8"], "--precision", False),
        ("score --shape 1.5,8,8 truncates no more", ["score", "--model", unet, "--data", str(f["arrays_parquet"]), "--out", new, "--shape", "1.5,8,8"], "--shape", False),
        ("score missing model", ["score", "--model", str(d / "nope.safetensors"), "--data", str(f["good_imgs"]), "--out", new], "nope.safetensors", False),
        ("t2i --format", si + ["--format", "xlsx"], "--format", False),
        ("t2i --metrics bogus", si[:-2] + ["bogus", "--no-progress"], "--metrics", False),
        ("t2i --flipd-t0", si + ["--flipd-t0", "3"], "--flipd-t0", False),
        ("t2i detect-prompts --flipd-t-max", dp + ["--flipd-t-max", "3"], "--flipd-t-max", False),
        ("t2i attribute --metric", at + ["--metric", "bogus"], "--metric", False),
        ("t2i mitigate --methods", mi + ["--methods", "bogus"], "--methods", False),
        ("t2i missing model folder", ["t2i", "score-images", str(f["good_imgs"]), "--model", str(d / "no_model"), "--out", new,
                                      "--metrics", "flipd_uncond"], "no_model", False),
        ("train --steps 0", train + ["--steps", "0"], "--steps", False),
        ("train --lr", train + ["--lr", "-1"], "--lr", False),
        ("train --channels", train + ["--channels", "1.5,8"], "--channels", False),
        ("train --out under a file", ["train", "--data", str(f["train_ok"]), "--out", str(f["a_file"] / "m.safetensors")], "--out", False),
        # 7. silent wrong results are refused
        ("lid CSV with a text column", ["lid", str(f["csv_text"]), "--k", "5"], "--columns", False),
        ("lid 0-byte .npy", ["lid", str(f["npy_empty"]), "--k", "5"], "empty.npy", False),
        ("lid NaN in the .npy", ["lid", str(f["npy_nan"]), "--k", "5"], "nan.npy", False),
        ("lid --alpha", lid + ["--alpha", "1.5"], "--alpha", False),
        ("lid k > n", ["lid", str(f["csv"]), "--k", "500"], "--k", False),
        # 9. errors that used to escape the handler
        ("mmh --device bogus", mmh + ["--device", "bogus"], "--device", False),
        ("score --device bogus", score + ["--device", "bogus"], "--device", False),
        ("t2i --device bogus", si + ["--device", "bogus"], "--device", False),
        *cuda_rows,
    ]
    return rows


def _table_ids() -> list[str]:
    # the ids are static; build them from a dummy dict of paths
    dummy = {k: Path("/nonexistent") / k for k in (
        "a_file", "folder_named_csv", "csv", "csv_text", "npy_empty", "npy_nan", "train_nan", "train_ok", "good_imgs", "text_png",
        "trunc_png", "parquet_bad", "arrays_parquet", "ckpt_mismatch", "prompts", "ref_png")}
    dummy["dir"] = Path("/nonexistent")
    return [r[0] for r in _rows(dummy)]


ROW_IDS = _table_ids()


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_bad_input_is_one_line_exit_2_before_any_work(row_id, inputs, monkeypatch, request):
    row = {r[0]: r for r in _rows(inputs)}[row_id]
    _, argv, needle, may_load = row
    monkeypatch.setattr(torch.nn.Module, "__call__", _forbidden)
    if not may_load:
        request.getfixturevalue("no_model_calls")
    monkeypatch.delenv("LIDMEM_LLM_URL", raising=False)
    out_new = _outs(inputs["dir"])["new"]
    before = {p: (p.stat().st_mtime_ns if p.exists() else None) for p in (inputs["a_file"],)}
    res = runner.invoke(app, argv)
    assert not isinstance(res.exception, ModelCalled), f"{row_id}: a model was loaded or called before the error"
    assert res.exit_code == 2, f"{row_id}: exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}\n{res.exception!r}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"{row_id}: stderr is not one line: {res.stderr!r}"
    assert lines[0].startswith("error: ") and needle in lines[0], f"{row_id}: {lines[0]!r} does not name {needle!r}"
    assert not out_new.exists(), f"{row_id}: wrote {out_new}"
    assert not (inputs["dir"] / "x.txt").exists()
    assert inputs["a_file"].read_text() == "I am a file\n" and inputs["a_file"].stat().st_mtime_ns == before[inputs["a_file"]]
    assert not any(inputs["folder_named_csv"].iterdir())


def test_t2i_chat_rewriter_url_checked_before_the_model(inputs, monkeypatch, no_model_calls):
    mi = ["t2i", "mitigate", "--model", str(T2I), "--prompt", "a photo of a cat", "--reference", str(inputs["ref_png"]),
          "--out", str(_outs(inputs["dir"])["new"]), "--rewriter", "chat"]
    monkeypatch.delenv("LIDMEM_LLM_URL", raising=False)
    res = runner.invoke(app, mi)
    assert res.exit_code == 2 and "LIDMEM_LLM_URL" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("LIDMEM_LLM_URL", "http://llm.example.com/v1")
    res = runner.invoke(app, mi)
    assert res.exit_code == 2 and "LIDMEM_LLM_URL" in res.stderr and "https" in res.stderr, res.stderr


def test_error_is_one_physical_line_when_stderr_is_not_a_terminal(tmp_path):
    """A real subprocess (stderr a pipe): a message longer than 80 columns stays on one line."""
    long_dir = tmp_path / ("a_rather_long_folder_name_" * 4)
    long_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(lidmem.__file__).parents[1]), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "lidmem.cli.main", "lid", str(long_dir / "missing.npy")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 100 and "missing.npy" in lines[0], proc.stderr
    # a value click cannot parse: one line too (typer draws a panel), naming the option
    proc = subprocess.run([sys.executable, "-m", "lidmem.cli.main", "lid", str(long_dir / "x.npy"), "--k", "abc"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--k" in lines[0], proc.stderr


def test_lid_csv_with_text_column_works_with_columns(inputs):
    res = runner.invoke(app, ["lid", str(inputs["csv_text"]), "--columns", "a,b", "--k", "5", "--no-progress"])
    assert res.exit_code == 0, res.stderr
    assert "in R^2" in res.stderr  # LID computed in the 2 chosen dimensions
    table = pd.read_csv(io.StringIO(res.stdout))
    assert len(table) == 30


# --- 3 + 10. score: a corrupt image mid-run, fixed, resumes the finished shards -------------------
def _score_png(data: Path, out: Path) -> object:
    return runner.invoke(app, ["score", "--data", str(data), "--out", str(out), "--metrics", "png_complexity",
                               "--shard-size", "2", "--batch-size", "2", "--no-progress"])


def test_score_corrupt_image_mid_run_then_fixed_resumes(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=8)
    good = (data / "img05.png").read_bytes()
    (data / "img05.png").write_bytes(good[: len(good) // 2])  # truncated: found in shard 2 (rows 4-5)
    out = tmp_path / "out"
    res = _score_png(data, out)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "img05.png" in res.stderr and "truncated" in res.stderr
    done = sorted(p.name for p in (out / "shards").glob("part-*.parquet"))
    assert done == ["part-000000.parquet", "part-000001.parquet"]
    assert not list((out / "shards").glob("*.tmp-*"))
    stamps = {n: (out / "shards" / n).stat().st_mtime_ns for n in done}
    (data / "img05.png").write_bytes(good)  # the user fixes the file: resume is not refused
    res = _score_png(data, out)
    assert res.exit_code == 0, res.stderr
    assert "skipped 2 finished shards" in res.stderr
    assert {n: (out / "shards" / n).stat().st_mtime_ns for n in done} == stamps
    clean = tmp_path / "clean"
    assert _score_png(data, clean).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), pd.read_parquet(clean / "scores.parquet"))
    # a finished shard whose file changed afterwards is refused, naming the shard file
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(data / "img00.png")
    (out / "scores.parquet").unlink()
    res = _score_png(data, out)
    assert res.exit_code == 2 and "part-000000.parquet" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_score_failing_on_first_batch_leaves_no_settings(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=4)
    raw = (data / "img00.png").read_bytes()
    (data / "img00.png").write_bytes(raw[: len(raw) // 2])  # header fine, pixels truncated: fails in batch 1
    out = tmp_path / "out"
    res = _score_png(data, out)
    assert res.exit_code == 2 and "img00.png" in res.stderr
    assert not out.exists()  # nothing left that would lock the folder to these settings
    (data / "img00.png").write_bytes(raw)
    res = runner.invoke(app, ["score", "--data", str(data), "--out", str(out), "--metrics", "png_complexity", "--shard-size", "3", "--no-progress"])
    assert res.exit_code == 0, res.stderr


# --- 5. concurrent runs on one --out ------------------------------------------------------------------
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lidmem.scoring import score_dataset

    data, out, ready, go = map(Path, sys.argv[1:5])

    def hold(shard, path):
        if shard.index == 0:
            ready.write_text("1")
            for _ in range(6000):  # waits for the test's signal (bounded, never a timing assumption)
                if go.exists():
                    return
                time.sleep(0.05)
            raise SystemExit("no go signal")

    score_dataset(None, data, out, metrics=["png_complexity"], shard_size=2, batch_size=2, progress=False, on_shard_done=hold)
    """
)


def test_concurrent_score_runs_one_refused_table_complete(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=8)
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    stale = out / "shards" / "part-000003.parquet.tmp-999999999"  # left by a dead process
    stale.write_bytes(b"partial")
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    env = {**os.environ, "PYTHONPATH": str(Path(lidmem.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, str(script), str(data), str(out), str(ready), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(6000):
            if ready.exists() or holder.poll() is not None:
                break
            threading.Event().wait(0.05)
        assert ready.exists(), holder.communicate()[1]
        assert not stale.exists()  # cleaned by the lock holder
        # a second writer, while the first holds the lock mid-run
        res = _score_png(data, out)
        assert res.exit_code == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "another lidmem score run" in lines[0] and str(out) in lines[0]
    finally:
        go.write_text("1")
        _, err = holder.communicate(timeout=600)
    assert holder.returncode == 0, err
    clean = tmp_path / "clean"
    assert _score_png(data, clean).exit_code == 0
    got, want = pd.read_parquet(out / "scores.parquet"), pd.read_parquet(clean / "scores.parquet")
    assert len(got) == 8 and got["row"].tolist() == list(range(8))
    pd.testing.assert_frame_equal(got, want)
    assert not list((out / "shards").glob("*.tmp-*"))


# --- 1. no pickle ---------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_training_state_is_never_executed(tmp_path):
    from lidmem.text2image import toydata
    from lidmem.text2image.testing import tiny_tokenizer
    from lidmem.text2image.training import load_train_state, train_text2image

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "state.pt"
    torch.save({"unet": _Evil(marker), "step": 1}, ckpt)
    with pytest.raises(ValueError, match="state.pt"):
        load_train_state(ckpt)
    assert not marker.exists()
    tok = tiny_tokenizer()
    images = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="weights_only"):
        train_text2image(images, ["a cat"] * 4, unet=toydata.build_unet(channels=(8, 16)),
                         text_encoder=toydata.build_text_encoder(tok, hidden_size=32, num_layers=1), tokenizer=tok,
                         scheduler=toydata.build_scheduler(), steps=2, batch_size=2, checkpoint=ckpt, progress=False)
    assert not marker.exists()
    # the file really is malicious: an unrestricted unpickler runs it
    torch.load(ckpt, weights_only=False)
    assert marker.read_text() == "pwned"


def test_no_unrestricted_unpickling_in_the_package():
    root = Path(lidmem.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for bad in ("weights_only=False", "pickle.load(", "pickle.loads(", "allow_pickle=True"):
            if bad in text:
                offenders.append(f"{path.relative_to(root)}: {bad}")
    assert not offenders, offenders


# --- 6. ChatRewriter transport -----------------------------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict] = []
    redirect_to: str | None = None

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        type(self).seen.append({"host": self.headers.get("Host"), "auth": self.headers.get("Authorization")})
        if type(self).redirect_to:
            self.send_response(307)
            self.send_header("Location", type(self).redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"choices": [{"message": {"content": "a photo of a kitten"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler):
    srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_chat_rewriter_never_forwards_the_key_to_another_host(monkeypatch):
    from lidmem.text2image import ChatRewriter

    pytest.importorskip("requests")
    target = type("Target", (_Recorder,), {"seen": [], "redirect_to": None})
    srv_b = _serve(target)
    origin = type("Origin", (_Recorder,), {"seen": [], "redirect_to": f"http://localhost:{srv_b.server_port}/v1/chat/completions"})
    srv_a = _serve(origin)
    try:
        monkeypatch.setenv("LIDMEM_TEST_URL", f"http://127.0.0.1:{srv_a.server_port}/v1")
        monkeypatch.setenv("LIDMEM_TEST_KEY", "sk-secret")
        rw = ChatRewriter("m", url_env="LIDMEM_TEST_URL", key_env="LIDMEM_TEST_KEY", timeout=30)
        assert rw.rewrite("a photo of a cat", ["a", "photo", "of", "a", "cat"], [4]) == "a photo of a kitten"
    finally:
        srv_a.shutdown()
        srv_b.shutdown()
    assert origin.seen[0]["auth"] == "Bearer sk-secret"  # the configured host gets the key
    assert len(target.seen) == 1 and target.seen[0]["auth"] is None  # the redirect target does not


def test_chat_rewriter_refuses_plain_http_off_localhost_and_names_unreachable(monkeypatch):
    from lidmem.text2image import ChatRewriter
    from lidmem.text2image.mitigation import check_chat_url

    for ok in ("https://api.openai.com/v1", "http://localhost:8000/v1", "http://127.0.0.1:1/v1", "http://[::1]:8/v1"):
        assert check_chat_url(ok) == ok
    for bad in ("http://api.example.com/v1", "ftp://x/v1", "api.openai.com/v1"):
        with pytest.raises(ValueError):
            check_chat_url(bad, "LIDMEM_LLM_URL")
    monkeypatch.setenv("LIDMEM_TEST_URL", "http://127.0.0.1:1/v1")  # nothing listens on port 1
    rw = ChatRewriter("m", url_env="LIDMEM_TEST_URL", key_env="LIDMEM_TEST_KEY", timeout=5)
    with pytest.raises(OSError, match="127.0.0.1:1"):
        rw.rewrite("a cat", ["a", "cat"], [1])


# --- 7 + 8. library boundaries ------------------------------------------------------------------------
def test_auroc_labels_must_be_binary():
    from lidmem.memorization.metrics import auroc

    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert auroc([0, 0, 1, 1], s) == pytest.approx(0.75)
    assert auroc(np.array([False, False, True, True]), s) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="0/1"):
        auroc([0, 0, 2, 2], s)


def test_float64_input_is_cast_to_the_model_dtype():
    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.estimators import flipd, normal_bundle

    model = load_score_model(VONMISES)
    g = np.random.default_rng(0)
    x64 = g.normal(size=(5, 2))  # NumPy's default dtype
    x32 = torch.from_numpy(x64).float()
    a = flipd(model, x64, t0=0.05)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, flipd(model, x32, t0=0.05))
    torch.testing.assert_close(normal_bundle(model, x64, t0=0.05, n_scores=8), normal_bundle(model, x32, t0=0.05, n_scores=8))
    torch.testing.assert_close(flipd(model, torch.from_numpy(x64), t0=0.05), a)


def test_output_path_checks():
    from lidmem._validation import check_output_path

    with pytest.raises(ValueError, match="out"):
        check_output_path("", "out")
    assert check_output_path(Path("/tmp") / "lidmem_new_dir_xyz", "out") == Path("/tmp/lidmem_new_dir_xyz")
    if os.geteuid() != 0:  # root may write anywhere
        with pytest.raises(ValueError, match="permission"):
            check_output_path("/proc/lidmem_out", "out")


def test_score_bad_images_skip_records_bad_rows(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=8)
    clean = tmp_path / "clean"
    assert _score_png(data, clean).exit_code == 0
    want = pd.read_parquet(clean / "scores.parquet")
    assert not (clean / "bad_rows.parquet").exists()
    (data / "img02.png").write_text("not an image")
    raw = (data / "img05.png").read_bytes()
    (data / "img05.png").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", "--data", str(data), "--out", str(out), "--metrics", "png_complexity", "--shard-size", "2",
                              "--batch-size", "2", "--no-progress", "--bad-images", "skip"])
    assert res.exit_code == 0, res.stderr
    assert "skipped 2 rows" in res.stderr
    got = pd.read_parquet(out / "scores.parquet")
    assert got["row"].tolist() == list(range(8)) and got["id"].tolist() == want["id"].tolist()
    assert got["png_complexity"].isna().tolist() == [r in (2, 5) for r in range(8)]
    keep = ~got["png_complexity"].isna()
    assert got.loc[keep, "png_complexity"].astype("int64").tolist() == want.loc[keep, "png_complexity"].tolist()
    bad = pd.read_parquet(out / "bad_rows.parquet")
    assert bad["row"].tolist() == [2, 5] and bad["id"].tolist() == ["img02.png", "img05.png"]
    assert "img02.png" in bad["reason"][0] and "not a readable image" in bad["reason"][0] and "truncated" in bad["reason"][1]
    # the default stops at the first bad image, naming it
    res = _score_png(data, tmp_path / "out_stop")
    assert res.exit_code == 2 and "img02.png" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_corrupt_shard_file_is_named(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=4)
    out = tmp_path / "out"
    assert _score_png(data, out).exit_code == 0
    (out / "shards" / "part-000001.parquet").write_bytes(b"PAR1 not really")
    for argv in (["score", "--out", str(out), "--merge"],
                 ["score", "--data", str(data), "--out", str(out), "--metrics", "png_complexity", "--shard-size", "2", "--batch-size", "2"]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 2 and "part-000001.parquet" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
