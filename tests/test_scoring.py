"""Resumable, data-parallel scoring: sources read the same images in the same order, a killed
run resumes to exactly the rows of an uninterrupted one, 2 workers equal 1, settings are
guarded. Ground truth: the digits images written to disk, and direct estimator calls."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lidmem import VPSDE
from lidmem.defaults import FLIPD_T0, NB_T0
from lidmem.diffusion.checkpoint import load_score_model, save_checkpoint
from lidmem.scoring import (
    SettingsMismatchError,
    batch_seed,
    merge_shards,
    open_source,
    read_settings,
    score_dataset,
)

N = 40  # images
SHARD = 8
BATCH = 4
BIN = Path(sys.executable).parent


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    imgs = (load_digits().images[:N] * 16).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    return imgs


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory, digits):
    """The same 40 images as a folder, a list file (reversed order), 2 Parquet files (bytes),
    1 Parquet file (arrays), 2 WebDataset tars and a save_to_disk-style Arrow folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("data")
    names = [f"img{i:03d}.png" for i in range(N)]
    blobs = [_png(a) for a in digits]
    (root / "folder").mkdir()
    for n, b in zip(names, blobs):
        (root / "folder" / n).write_bytes(b)
    (root / "list.txt").write_text("# reversed\n" + "\n".join(f"folder/{n}" for n in reversed(names)) + "\n\n")
    (root / "pq").mkdir()
    for k, sl in enumerate([slice(0, 17), slice(17, N)]):
        t = pa.table({"id": names[sl], "image": pa.array(blobs[sl], pa.binary())})
        pq.write_table(t, root / "pq" / f"part-{k}.parquet", row_group_size=5)
    arr = pa.table({"x": pa.array([list(a.astype(np.float32).ravel() / 255.0) for a in digits])})
    pq.write_table(arr, root / "arrays.parquet", row_group_size=7)
    (root / "wds").mkdir()
    for k, sl in enumerate([slice(0, 25), slice(25, N)]):
        with tarfile.open(root / "wds" / f"shard-{k:04d}.tar", "w") as tf:
            for i in range(N)[sl]:
                for suffix, payload in ((".cls", str(i % 10).encode()), (".png", blobs[i])):
                    info = tarfile.TarInfo(f"s{i:03d}{suffix}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    # Hugging Face save_to_disk layout: Arrow stream files listed in state.json, Image feature = struct{bytes, path}
    hf = root / "hf"
    hf.mkdir()
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    files = []
    for k, sl in enumerate([slice(0, 30), slice(30, N)]):
        t = pa.table({"image": pa.array([{"bytes": b, "path": None} for b in blobs[sl]], img_type), "label": list(range(N))[sl]})
        fn = f"data-{k:05d}-of-00002.arrow"
        with pa.OSFile(str(hf / fn), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        files.append({"filename": fn})
    state = {"_data_files": files, "_fingerprint": "0", "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
    (hf / "state.json").write_text(json.dumps(state))
    features = {"image": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}
    (hf / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features, "homepage": "", "license": ""}))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from lidmem.diffusion.mlp import MLPScoreNet

    torch.manual_seed(0)
    net = MLPScoreNet(64, hidden=32, depth=2, time_embed_dim=16)
    path = tmp_path_factory.mktemp("model") / "mlp.safetensors"
    save_checkpoint(path, net, sde=VPSDE(), prediction="epsilon", data_shape=[1, 8, 8])
    return path


def _table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "scores.parquet")


# --------------------------------------------------------------------------------------- sources
@pytest.mark.parametrize(
    "sub, order, ids",
    [
        ("folder", list(range(N)), [f"img{i:03d}.png" for i in range(N)]),
        ("list.txt", list(reversed(range(N))), [f"folder/img{i:03d}.png" for i in reversed(range(N))]),
        ("pq", list(range(N)), [f"img{i:03d}.png" for i in range(N)]),
        ("pq/*.parquet", list(range(N)), [f"img{i:03d}.png" for i in range(N)]),
        ("wds", list(range(N)), [f"s{i:03d}" for i in range(N)]),
        ("hf", list(range(N)), [str(i) for i in range(N)]),
    ],
)
def test_sources_read_the_images_in_order(datasets_dir, digits, sub, order, ids):
    src = open_source(datasets_dir / sub if "*" not in sub else str(datasets_dir / sub))
    assert len(src) == N
    truth = digits[order].astype(np.float32)[:, None] / 255.0
    rows = src.read(0, N)
    assert rows.is_image and rows.data.shape == (N, 1, 8, 8)
    np.testing.assert_array_equal(rows.data, truth)
    assert rows.ids == ids
    # a range crossing file / row-group boundaries
    part = src.read(13, 29)
    np.testing.assert_array_equal(part.data, truth[13:29])
    np.testing.assert_array_equal(part.rows, np.arange(13, 29))
    assert [s.size for s in src.shards(16)] == [16, 16, 8]


def test_parquet_array_column_and_errors(datasets_dir, digits):
    src = open_source(datasets_dir / "arrays.parquet", shape=(1, 8, 8))
    rows = src.read(3, 20)
    assert not rows.is_image
    np.testing.assert_allclose(rows.data, digits[3:20, None].astype(np.float32) / 255.0)
    assert rows.ids == [str(i) for i in range(3, 20)]
    with pytest.raises(ValueError, match="column='nope' is not in"):
        open_source(datasets_dir / "pq", column="nope")
    with pytest.raises(ValueError, match="outside the source's 40 rows"):
        src.read(30, 41)
    with pytest.raises(ValueError, match="applies to parquet and hf data only"):
        open_source(datasets_dir / "folder", column="image")


def test_hf_datasets_backend_if_installed(tmp_path, digits):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in digits[:10]]}, features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "ds"))
    src = open_source(tmp_path / "ds")
    np.testing.assert_array_equal(src.read(0, 10).data, digits[:10, None].astype(np.float32) / 255.0)


# --------------------------------------------------------------------------------------- scoring
def test_scores_equal_direct_estimator_calls(tmp_path, datasets_dir, digits, checkpoint):
    from lidmem.estimators import flipd, normal_bundle
    from lidmem.estimators._rank import percentile_threshold
    from lidmem.estimators.normal_bundle import normal_bundle_singular_values
    from lidmem.memorization.complexity import png_length

    res = score_dataset(
        checkpoint, datasets_dir / "folder", tmp_path / "out", metrics=["flipd", "flipd_hutchinson", "png_complexity"],
        shard_size=SHARD, batch_size=BATCH, progress=False,
    )
    assert res.rows_scored == N and res.n_shards == N // SHARD and res.merged == tmp_path / "out" / "scores.parquet"
    df = _table(tmp_path / "out")
    assert df["row"].tolist() == list(range(N))
    assert df["id"].tolist() == [f"img{i:03d}.png" for i in range(N)]
    model = load_score_model(checkpoint)
    x = torch.from_numpy(digits[:, None].astype(np.float32) / 255.0) * 2 - 1  # default value_range (-1, 1)
    np.testing.assert_allclose(df["flipd"], flipd(model, x, FLIPD_T0, trace="exact").double().numpy(), rtol=1e-5, atol=1e-3)
    hutch = [flipd(model, x[s : s + BATCH], FLIPD_T0, trace="hutchinson", seed=batch_seed(0, s, "flipd_hutchinson")) for s in range(0, N, BATCH)]
    np.testing.assert_allclose(df["flipd_hutchinson"], torch.cat(hutch).double().numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(df["png_complexity"], png_length(x.numpy(), value_range=(-1.0, 1.0)))
    # nb's default rank cut: the paper's 10th-percentile tau, fitted once on the first batch, applied to every shard
    nb = _table(score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "nb", metrics=["nb"], n_scores=32, shard_size=SHARD, batch_size=BATCH, progress=False).out)
    sv0 = normal_bundle_singular_values(model, x[:BATCH], NB_T0, n_scores=32, seed=batch_seed(0, 0, "nb"))
    tau = percentile_threshold(sv0, 10.0)
    assert read_settings(tmp_path / "nb")["settings"]["params"]["nb_tau"] == pytest.approx(tau, rel=1e-6)
    nb_direct = [normal_bundle(model, x[s : s + BATCH], NB_T0, n_scores=32, seed=batch_seed(0, s, "nb"), threshold=tau) for s in range(0, N, BATCH)]
    np.testing.assert_array_equal(nb["nb"], torch.cat(nb_direct).numpy())
    again = score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "nb", metrics=["nb"], n_scores=32, shard_size=SHARD, batch_size=BATCH, progress=False)
    assert again.rows_scored == 0 and len(again.shards_skipped) == N // SHARD  # resumes with the recorded tau
    gap = _table(score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "nb_gap", metrics=["nb"], n_scores=32, nb_threshold="gap", shard_size=SHARD, batch_size=BATCH, progress=False).out)
    gap_direct = [normal_bundle(model, x[s : s + BATCH], NB_T0, n_scores=32, seed=batch_seed(0, s, "nb"), threshold="gap") for s in range(0, N, BATCH)]
    np.testing.assert_array_equal(gap["nb"], torch.cat(gap_direct).numpy())
    settings = read_settings(tmp_path / "out")["settings"]
    assert settings["metrics"] == ["flipd", "flipd_hutchinson", "png_complexity"] and settings["n_shards"] == 5
    # the same rows from another source kind give the same scores
    res2 = score_dataset(checkpoint, datasets_dir / "wds", tmp_path / "out2", metrics=["flipd_hutchinson", "png_complexity"], shard_size=SHARD, batch_size=BATCH, progress=False)
    df2 = _table(res2.out)
    np.testing.assert_array_equal(df2["flipd_hutchinson"], df["flipd_hutchinson"])
    np.testing.assert_array_equal(df2["png_complexity"], df["png_complexity"])


def test_flipd_map_metric_equals_direct_call(tmp_path, datasets_dir, digits, checkpoint):
    from lidmem.estimators import flipd, flipd_map, map_concentration

    res = score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "maps", metrics=["flipd_map_top10_mass", "flipd"],
                        shard_size=SHARD, batch_size=BATCH, progress=False)
    df = _table(res.out)
    model = load_score_model(checkpoint)
    x = torch.from_numpy(digits[:, None].astype(np.float32) / 255.0) * 2 - 1
    maps = flipd_map(model, x, FLIPD_T0)
    assert maps.shape == x.shape
    np.testing.assert_allclose(df["flipd_map_top10_mass"], map_concentration(maps).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps.double().sum((1, 2, 3)).numpy(), df["flipd"], rtol=1e-5, atol=1e-3)
    v = df["flipd_map_top10_mass"].to_numpy()
    no_mass = ((1 - maps.double()).clamp_min(0).sum((1, 2, 3)) == 0).numpy()
    np.testing.assert_array_equal(np.isnan(v), no_mass)  # NaN only for maps that are free everywhere
    assert (v[~no_mass] >= 0.1 - 1e-9).all() and (v[~no_mass] <= 1).all()  # the lowest 10% hold at least 10%


def test_interrupted_run_resumes_to_identical_rows(tmp_path, datasets_dir, checkpoint):
    kw = dict(metrics=["flipd_hutchinson", "png_complexity"], shard_size=SHARD, batch_size=BATCH, seed=3, progress=False)
    full = _table(score_dataset(checkpoint, datasets_dir / "pq", tmp_path / "full", **kw).out)

    done = []

    def stop_after_two(shard, path):
        done.append(shard.index)
        if len(done) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second shard

    with pytest.raises(KeyboardInterrupt):
        score_dataset(checkpoint, datasets_dir / "pq", tmp_path / "part", on_shard_done=stop_after_two, **kw)
    parts = sorted(p.name for p in (tmp_path / "part" / "shards").iterdir())
    assert parts == ["part-000000.parquet", "part-000001.parquet"]
    assert not (tmp_path / "part" / "scores.parquet").exists()
    with pytest.raises(ValueError, match="3 of 5 shards"):
        merge_shards(tmp_path / "part")
    # a torn temporary file from a killed writer is never counted as done
    (tmp_path / "part" / "shards" / "part-000002.parquet.tmp-999").write_bytes(b"PAR1 torn")
    res = score_dataset(checkpoint, datasets_dir / "pq", tmp_path / "part", **kw)
    assert res.shards_skipped == [0, 1] and res.shards_scored == [2, 3, 4] and res.rows_scored == N - 2 * SHARD
    assert not list((tmp_path / "part" / "shards").glob("*.tmp-*"))
    pd.testing.assert_frame_equal(_table(res.out), full)
    # a third run has nothing left to do
    again = score_dataset(checkpoint, datasets_dir / "pq", tmp_path / "part", **kw)
    assert again.rows_scored == 0 and again.shards_skipped == [0, 1, 2, 3, 4]


_KILL_SCRIPT = """
import sys, time
from lidmem.scoring import score_dataset
score_dataset(sys.argv[1], sys.argv[2], sys.argv[3], metrics=["flipd_hutchinson"], shard_size=8, batch_size=4,
              seed=1, progress=False, on_shard_done=lambda shard, path: time.sleep(1.0))
"""


def test_sigkilled_run_resumes_to_identical_rows(tmp_path, datasets_dir, checkpoint):
    kw = dict(metrics=["flipd_hutchinson"], shard_size=SHARD, batch_size=BATCH, seed=1, progress=False)
    full = _table(score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "full", **kw).out)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(checkpoint), str(datasets_dir / "folder"), str(out)], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list((out / "shards").glob("part-*.parquet"))) < 2:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    n_done = len(list((out / "shards").glob("part-*.parquet")))
    assert 2 <= n_done < N // SHARD, n_done
    res = score_dataset(checkpoint, datasets_dir / "folder", out, **kw)
    assert len(res.shards_skipped) == n_done
    pd.testing.assert_frame_equal(_table(out), full)


def test_two_workers_equal_one(tmp_path, datasets_dir, checkpoint):
    kw = dict(metrics=["flipd_hutchinson", "png_complexity"], shard_size=SHARD, batch_size=BATCH, seed=7, progress=False)
    single = _table(score_dataset(checkpoint, datasets_dir / "wds", tmp_path / "one", **kw).out)
    # plain RANK / WORLD_SIZE, no rendezvous: each worker writes its shards, nobody merges
    r0 = score_dataset(checkpoint, datasets_dir / "wds", tmp_path / "two", rank=0, world_size=2, **kw)
    r1 = score_dataset(checkpoint, datasets_dir / "wds", tmp_path / "two", rank=1, world_size=2, **kw)
    assert r0.shards_scored == [0, 2, 4] and r1.shards_scored == [1, 3] and r0.merged is None and r1.merged is None
    pd.testing.assert_frame_equal(pd.read_parquet(merge_shards(tmp_path / "two")), single)


@pytest.mark.slow
def test_torchrun_two_workers_equal_one(tmp_path, datasets_dir, checkpoint):
    single = _table(score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "one", metrics=["flipd_hutchinson"], shard_size=SHARD, batch_size=BATCH, seed=5, progress=False).out)
    cmd = [
        str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
        "-m", "lidmem.cli.main", "score", "--model", str(checkpoint), "--data", str(datasets_dir / "folder"),
        "--metrics", "flipd_hutchinson", "--out", str(tmp_path / "tr"), "--shard-size", str(SHARD),
        "--batch-size", str(BATCH), "--seed", "5", "--device", "cpu", "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = {json.loads(__import__("pyarrow.parquet").parquet.read_metadata(p).metadata[b"lidmem"])["shard"]["index"] for p in (tmp_path / "tr" / "shards").glob("*.parquet")}
    assert shards == set(range(N // SHARD))
    pd.testing.assert_frame_equal(_table(tmp_path / "tr"), single)  # merged by rank 0 after the barrier


def test_settings_mismatch_is_refused(tmp_path, datasets_dir, checkpoint):
    kw = dict(metrics=["png_complexity"], shard_size=SHARD, batch_size=BATCH, progress=False)
    score_dataset(None, datasets_dir / "folder", tmp_path / "o", **kw)
    with pytest.raises(SettingsMismatchError, match="shard_size: folder has 8, this run has 16"):
        score_dataset(None, datasets_dir / "folder", tmp_path / "o", **{**kw, "shard_size": 16})
    with pytest.raises(SettingsMismatchError, match="metrics"):
        score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "o", **{**kw, "metrics": ["png_complexity", "flipd"]})
    with pytest.raises(SettingsMismatchError, match="data.fingerprint"):
        score_dataset(None, datasets_dir / "list.txt", tmp_path / "o", **kw)
    with pytest.raises(ValueError, match="model is required by the metrics"):
        score_dataset(None, datasets_dir / "folder", tmp_path / "p", metrics=["flipd"], progress=False)
    with pytest.raises(ValueError, match="not supported"):
        score_dataset(None, datasets_dir / "folder", tmp_path / "p", metrics=["nope"], progress=False)


def test_cli_score_and_merge(tmp_path, datasets_dir, checkpoint):
    from typer.testing import CliRunner

    from lidmem.cli.main import app

    runner = CliRunner()
    args = ["score", "--model", str(checkpoint), "--data", str(datasets_dir / "hf"), "--metrics", "flipd_hutchinson,png_complexity",
            "--out", str(tmp_path / "c"), "--shard-size", "16", "--batch-size", "8", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    df = _table(tmp_path / "c")
    assert len(df) == N and df["row"].tolist() == list(range(N))
    lib = _table(score_dataset(checkpoint, datasets_dir / "hf", tmp_path / "lib", metrics=["flipd_hutchinson", "png_complexity"], shard_size=16, batch_size=8, progress=False).out)
    pd.testing.assert_frame_equal(df, lib)
    (tmp_path / "c" / "scores.parquet").unlink()
    assert runner.invoke(app, ["score", "--out", str(tmp_path / "c"), "--merge"]).exit_code == 0
    pd.testing.assert_frame_equal(_table(tmp_path / "c"), lib)
    bad = runner.invoke(app, args[:-1] + ["--t0", "2"])
    assert bad.exit_code == 2 and "t0" in bad.output


def test_cfg_norm_on_captioned_shards(tmp_path, datasets_dir, checkpoint):
    """cfg_norm of a tiny latent text-to-image model over Parquet (caption column) and WebDataset
    (.txt members) equals cfg_norm_after_euler called on the same images and captions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lidmem.text2image.adapters import TextToImageModel
    from lidmem.text2image.image_scores import cfg_norm_after_euler
    from lidmem.text2image.testing import TINY_WORDS, tiny_components

    model = TextToImageModel(**tiny_components(seed=0, latent=True, sample_size=8))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    caps = [" ".join(TINY_WORDS[i : i + 2]) for i in range(6)]
    pq.write_table(pa.table({"image": pa.array([_png(a) for a in imgs], pa.binary()), "caption": caps}), tmp_path / "c.parquet")
    with tarfile.open(tmp_path / "c.tar", "w") as tf:
        for i in range(6):
            for suffix, payload in ((".txt", caps[i].encode()), (".png", _png(imgs[i]))):
                info = tarfile.TarInfo(f"k{i}{suffix}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).astype(np.float32) / 255.0) * 2 - 1
    truth = cfg_norm_after_euler(model, x, caps, t0=0.01, euler_steps=3, batch_size=4).double().numpy()
    assert truth.std() > 0
    for data in (tmp_path / "c.parquet", tmp_path / "c.tar"):
        res = score_dataset(model, data, tmp_path / f"out-{data.suffix}", metrics=["cfg_norm"], shard_size=4, batch_size=4, progress=False)
        np.testing.assert_allclose(_table(res.out)["cfg_norm"], truth, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs one caption per image"):
        score_dataset(model, datasets_dir / "folder", tmp_path / "nocap", metrics=["cfg_norm"], progress=False)
    with pytest.raises(TypeError, match="needs a text-to-image model"):
        score_dataset(checkpoint, datasets_dir / "folder", tmp_path / "nott", metrics=["cfg_norm"], progress=False)
