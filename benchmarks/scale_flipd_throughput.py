"""FLIPD throughput as a multiple of plain forward passes, and memory of streaming scoring.

Usage::

    python benchmarks/scale_flipd_throughput.py            # CPU (or CUDA when present)
    python benchmarks/scale_flipd_throughput.py --device cuda --compile
    python benchmarks/scale_flipd_throughput.py --skip-memory --no-compile

Table 1: for an MLP (d = 784) and a small UNet (3x32x32), the time of one FLIPD call
(Hutchinson, 1 probe; 4 probes batched into one model call; 4 probes as 4 separate calls) over
the time of one forward pass of the same score model on the same batch. With CUDA, the same
in bfloat16 autocast (mixed precision). ``--compile`` adds rows with ``torch.compile``d networks.
The last column is a reference outside lidmem: one Hutchinson term ``v^T J v`` from a single
reverse-mode VJP (gradient of ``<s(x), v>``) instead of forward mode.

CPU timings use one thread by default (``--threads``): on a shared, oversubscribed machine
multi-threaded kernels spin and the ratios become noise.

Table 2: peak memory of :func:`lidmem.scoring.score_dataset` (one fresh process per row) for
data sets of different sizes and batch sizes: growth of the peak RSS over the RSS before
scoring (Linux ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``), and
``torch.cuda.max_memory_allocated`` on GPU. Memory follows the batch size, not the data set size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lidmem import ScoreModel, VPSDE
from lidmem.estimators import flipd


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, *, repeat: int, warmup: int = 1) -> float:
    """Fastest of ``repeat`` runs of ``fn()`` after ``warmup`` runs, in seconds (the minimum is
    the most robust statistic on a shared, loaded machine)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def build(name: str, device: torch.device) -> tuple[ScoreModel, tuple[int, ...], int]:
    torch.manual_seed(0)
    if name == "mlp":
        from lidmem.diffusion.mlp import MLPScoreNet

        net = MLPScoreNet(784, hidden=512, depth=3)
        shape, batch = (784,), 512
    else:
        from lidmem.diffusion.unet import UNetScoreNet

        net = UNetScoreNet(32, in_channels=3, block_out_channels=(32, 64), layers_per_block=1)
        shape, batch = (3, 32, 32), 16 if device.type == "cpu" else 256
    return ScoreModel(net.to(device).eval(), VPSDE(), prediction="epsilon"), shape, batch


def ratio_rows(name: str, device: torch.device, *, compile_: bool, repeat: int) -> list[dict]:
    model, shape, batch = build(name, device)
    x = torch.randn(batch, *shape, device=device)
    variants = [("eager", model, None)]
    if device.type == "cuda":
        variants.append(("eager+bf16", model, torch.bfloat16))
    if compile_:
        try:
            cmodel = ScoreModel(torch.compile(model.net), model.sde, prediction=model.prediction)
            variants.append(("compile", cmodel, None))
            if device.type == "cuda":
                variants.append(("compile+bf16", cmodel, torch.bfloat16))
        except Exception as exc:  # pragma: no cover - depends on the toolchain
            print(f"# torch.compile unavailable: {exc}", file=sys.stderr)
    rows = []
    for label, m, dtype in variants:
        ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else (lambda: torch.autocast(device.type, enabled=False))

        def fwd():
            with torch.no_grad(), ctx():
                m(x, 0.01)

        def h1():
            with ctx():
                flipd(m, x, 0.01, trace="hutchinson", n_probes=1, batch_size=batch, progress=False)

        def h4():
            with ctx():
                flipd(m, x, 0.01, trace="hutchinson", n_probes=4, batch_size=batch, progress=False)

        def h4_loop():
            with ctx():
                for s in range(4):
                    flipd(m, x, 0.01, trace="hutchinson", n_probes=1, seed=s, batch_size=batch, progress=False)

        def rev1():
            # reference, not lidmem's path: v^T J v from one reverse-mode VJP (grad of <s(x), v>)
            with ctx():
                xx = x.detach().clone().requires_grad_(True)
                s = m(xx, 0.01)
                (g,) = torch.autograd.grad((s * v).sum(), xx)
                (g * v).flatten(1).sum(1)

        v = torch.randint(0, 2, x.shape, device=device).to(x.dtype) * 2 - 1
        row = {"network": name, "variant": label, "batch": batch, "d": int(np.prod(shape))}
        try:
            t0 = time.perf_counter()
            fwd()
            h1()
            h4()
            rev1()
            row["warmup_s"] = time.perf_counter() - t0
            fns = {"fwd": fwd, "h1": h1, "h4": h4, "h4l": h4_loop, "rev": rev1}
            best = {k: float("inf") for k in fns}
            for _ in range(repeat):  # interleaved, so that load changes hit every variant alike
                for k, fn in fns.items():
                    best[k] = min(best[k], timeit(fn, device, repeat=1, warmup=0))
            tf, t1, t4, t4l, tr = best["fwd"], best["h1"], best["h4"], best["h4l"], best["rev"]
            row.update(
                forward_ms=1e3 * tf,
                flipd1_ms=1e3 * t1,
                ratio1=t1 / tf,
                flipd4_batched_ratio=t4 / tf,
                flipd4_loop_ratio=t4l / tf,
                reverse_ratio=tr / tf,
                img_per_s=batch / t1,
            )
        except Exception as exc:  # report, don't crash: torch.compile + jvp is version dependent
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
        rows.append(row)
    return rows


def print_ratio_table(rows: list[dict]) -> None:
    head = "| network | variant | batch | d | forward ms | FLIPD 1 probe ms | FLIPD/forward (1 probe) | 4 probes batched / forward | 4 probes looped / forward | reverse-mode vJv / forward | img/s (1 probe) |"
    print(head)
    print("|---" * 11 + "|")
    for r in rows:
        if "error" in r:
            print(f"| {r['network']} | {r['variant']} | {r['batch']} | {r['d']} | fails: {r['error']} | | | | | | |")
            continue
        print(
            f"| {r['network']} | {r['variant']} | {r['batch']} | {r['d']} | {r['forward_ms']:.2f} | {r['flipd1_ms']:.2f} | "
            f"**{r['ratio1']:.2f}x** | {r['flipd4_batched_ratio']:.2f}x | {r['flipd4_loop_ratio']:.2f}x | {r['reverse_ratio']:.2f}x | {r['img_per_s']:.0f} |"
        )


# ----------------------------------------------------------------------------- memory (child)
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def prepare_memory_data(wd: Path, sizes: list[int]) -> None:
    """Write Parquet files of synthetic 3x32x32 PNG images and an MLP checkpoint (d = 3072)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from lidmem.diffusion.checkpoint import save_checkpoint
    from lidmem.diffusion.mlp import MLPScoreNet

    rng = np.random.default_rng(0)
    for n in sizes:
        blobs = []
        for _ in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
            blobs.append(buf.getvalue())
        pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), wd / f"data-{n}.parquet", row_group_size=256)
    torch.manual_seed(0)
    save_checkpoint(wd / "mlp3072.safetensors", MLPScoreNet(3072, hidden=128, depth=2), sde=VPSDE(), prediction="epsilon", data_shape=[3, 32, 32])


def memory_child(n: int, batch: int, workdir: str, device: str) -> None:
    """Score the prepared data set of ``n`` images in a fresh process and print peak memory as JSON."""
    import PIL.PngImagePlugin  # noqa: F401  (imports in the baseline, not in the growth)
    import pyarrow.parquet  # noqa: F401

    from lidmem.diffusion.checkpoint import load_score_model  # noqa: F401
    from lidmem.scoring import score_dataset

    wd = Path(workdir)
    dev = torch.device(device)
    # reset the kernel's peak-RSS mark (VmHWM) to the current RSS, then read it after scoring
    Path("/proc/self/clear_refs").write_text("5")
    base_rss = _status_kib("VmRSS")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    res = score_dataset(
        wd / "mlp3072.safetensors", wd / f"data-{n}.parquet", wd / f"out-{n}-{batch}", metrics=["flipd_hutchinson", "png_complexity"],
        shard_size=1024, batch_size=batch, device=dev, progress=False,
    )
    secs = time.perf_counter() - t
    peak_rss = _status_kib("VmHWM")
    out = {"n": n, "batch": batch, "rss_growth_mib": (peak_rss - base_rss) / 1024, "peak_rss_mib": peak_rss / 1024, "rows_per_s": res.rows_scored / secs}
    if dev.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(out))


def memory_table(device: str, sizes: list[int], batches: list[int]) -> None:
    with tempfile.TemporaryDirectory() as wd:
        prepare_memory_data(Path(wd), sizes)
        rows = []
        for n in sizes:
            for b in batches:
                proc = subprocess.run(
                    [sys.executable, __file__, "--_memory-child", str(n), str(b), wd, "--device", device, "--threads", str(torch.get_num_threads())],
                    capture_output=True, text=True, check=True,
                )
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cuda = "cuda_peak_mib" in rows[0]
    print(f"| images (3x32x32) | batch | peak RSS MiB | RSS growth while scoring MiB |{' CUDA peak MiB |' if cuda else ''} rows/s |")
    print(f"|---|---|---|---|{'---|' if cuda else ''}---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['batch']} | {r['peak_rss_mib']:.0f} | {r['rss_growth_mib']:.0f} |"
            + (f" {r['cuda_peak_mib']:.0f} |" if cuda else "")
            + f" {r['rows_per_s']:.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", dest="compile_", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: stable timings on a shared machine)")
    ap.add_argument("--networks", default="mlp,unet")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--sizes", default="512,4096")
    ap.add_argument("--batches", default="16,128")
    ap.add_argument("--_memory-child", nargs=3, metavar=("N", "BATCH", "DIR"), dest="memory_child")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        n, b, wd = args.memory_child
        memory_child(int(n), int(b), wd, args.device)
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# FLIPD / forward ratio on {name}, torch {torch.__version__}\n")
    rows = []
    for net in args.networks.split(","):
        rows += ratio_rows(net, device, compile_=args.compile_, repeat=args.repeat)
    print_ratio_table(rows)
    for r in rows:
        if r.get("warmup_s", 0) > 5:
            print(f"# {r['network']} {r['variant']}: first call (incl. compilation) {r['warmup_s']:.1f} s")
    if not args.skip_memory:
        print(f"\n# peak memory of score_dataset (flipd_hutchinson + png_complexity, MLP d=3072 hidden 128, shard 1024) on {args.device}\n")
        memory_table(args.device, [int(v) for v in args.sizes.split(",")], [int(v) for v in args.batches.split(",")])


if __name__ == "__main__":
    main()
