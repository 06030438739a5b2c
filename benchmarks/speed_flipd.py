"""Cost of FLIPD per point as a multiple of one forward pass of the same network, default arguments.

Networks (issue 14): the 784-d MLP (batch 512), the shipped digits UNet (batch 256), a
CIFAR-10-size diffusers ``UNet2DModel`` with attention at 3x32x32 (the ``google/ddpm-cifar10-32``
configuration written out below, random weights; batch 16) and the shipped text-to-image UNet
with classifier-free guidance (both branches in the Jacobian; batch 64).

For each network the reference is one forward pass on the batch under ``torch.no_grad()`` (for
the text-to-image row: the guided noise prediction ``model.epsilon(x, t, c, empty, 7.5)``, one
UNet call on the ``[uncond, cond]`` batch). Columns, all ratios of time per point in the same
process (forward and estimator timed alternately, median of ``--repeats`` paired ratios, so that
load from other processes affects both sides alike):

- ``default``: ``flipd(model, x, t0, trace="hutchinson", n_probes=1)`` with every other argument
  at its default (``ad="auto"``); for text-to-image ``lidmem.text2image.image_flipd`` with the
  captions' embeddings and ``guidance_scale=7.5``;
- ``fwd stock``: forward mode with PyTorch's own derivative rules (the former default);
- ``auto picks``: the mode ``ad="auto"`` chose after its one-time check against reverse mode;
- ``forward`` / ``reverse``: ``ad="forward"`` (lidmem's rules) / ``ad="reverse"``;
- ``auto / faster``: ``default`` over the faster of ``forward`` and ``reverse`` (issue 20's goal:
  at most 1.10 on every network at 1 and 2 threads);
- ``exact / d``: the exact trace (``d`` tangents per point) as a multiple of ``d`` forwards
  (skipped above ``--max-exact-dim``);
- ``live default`` / ``live reverse``: peak bytes of live tensors while running one batch (the
  running sum of every allocation and free that ``torch.profiler(profile_memory=True)`` records,
  in time order; inputs and parameters allocated before are not counted), divided by the same
  for one forward pass of the batch: deterministic, independent of the allocator;
- ``rss default`` / ``rss reverse``: peak resident memory of the process above the loaded model
  and inputs, the same ratio, each measured in a fresh child process (Linux ``/proc``: VmHWM
  reset after loading; both sides with lidmem's allocator setting). It includes the allocator's
  slack and one-off buffers of the first call, and moves by ±20% between fresh processes.
  ``--no-memory`` skips all four.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_flipd.py [--repeats 7] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import torch

T0 = 0.01
GUIDANCE = 7.5

#: google/ddpm-cifar10-32's UNet2DModel configuration (35.7 M parameters), written out so that
#: nothing is downloaded; random weights (the cost does not depend on them).
CIFAR10_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "act_fn": "silu",
    "center_input_sample": False,
    "mid_block_scale_factor": 1,
    "time_embedding_type": "positional",
}


class _DiffusersEps(torch.nn.Module):
    """A diffusers ``UNet2DModel`` called as ``net(x, t)`` with continuous ``t`` in [0, 1]."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, 1000.0 * t).sample


def build(name: str) -> tuple[Any, Callable[[], Any], Callable[..., Any], tuple[int, ...], int]:
    """``(model, forward, flipd_call, shape, batch)`` for one of the networks.

    ``forward()`` runs the reference pass on the batch; ``flipd_call(x, **kw)`` runs FLIPD on
    points ``x`` with extra keyword arguments (``ad=...`` or the stock-rule switch).
    """
    from lidmem import ScoreModel, VPSDE
    from lidmem.estimators import flipd

    torch.manual_seed(0)
    if name == "t2i":
        from lidmem.text2image import image_flipd, load_text2image

        model = load_text2image(str(resources.files("lidmem") / "weights" / "text2image"))
        B = 64
        shape = model.sample_shape
        x = torch.randn(B, *shape)
        cond, _ = model.encode_prompt(["a centered handwritten digit three with thick strokes"])
        uncond = model.unconditional_embeds(1)

        def fwd() -> None:
            with torch.no_grad():
                model.epsilon(x, T0, cond, uncond, GUIDANCE)

        def call(xs: torch.Tensor, **kw: Any) -> Any:
            if kw.get("ad", "auto") == "reverse":
                return None  # image_flipd has forward mode only
            return image_flipd(model, xs, cond, t0=T0, guidance_scale=GUIDANCE, inputs="latents", batch_size=xs.shape[0], progress=False)

        return model.unet, fwd, call, shape, B
    if name == "mlp":
        from lidmem.diffusion.mlp import MLPScoreNet

        net, shape, B = MLPScoreNet(784, hidden=512, depth=4), (784,), 512
        model = ScoreModel(net.eval(), VPSDE(), prediction="epsilon")
    elif name == "digits":
        from lidmem.diffusion.checkpoint import load_score_model

        model = load_score_model(str(resources.files("lidmem") / "weights" / "digits_unet.safetensors"))
        shape, B = (1, 8, 8), 256
    elif name == "cifar":
        from diffusers import UNet2DModel

        net = _DiffusersEps(UNet2DModel(**CIFAR10_UNET_CONFIG)).eval()
        model = ScoreModel(net, VPSDE(), prediction="epsilon")
        shape, B = (3, 32, 32), 16
    else:
        raise ValueError(f"unknown network {name!r}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(B, *shape)
    tvec = torch.full((B,), T0)

    def fwd() -> None:
        with torch.no_grad():
            model(x, tvec)

    def call(xs: torch.Tensor, **kw: Any) -> Any:
        kw.setdefault("trace", "hutchinson")
        return flipd(model, xs, T0, batch_size=xs.shape[0], progress=False, **kw)

    return model, fwd, call, shape, B


def _seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _paired_ratio(fn: Callable[[], Any], n_pts: int, fwd: Callable[[], Any], B: int, repeats: int) -> float:
    """Median over repeats of (time of fn per point) / (time of one forward per point)."""
    fn()
    fwd()  # warm-up
    ratios = []
    for _ in range(repeats):
        tf = _seconds(fwd) / B
        tm = _seconds(fn) / n_pts
        tf = min(tf, _seconds(fwd) / B)
        ratios.append(tm / tf)
    return statistics.median(ratios)


def _stock_rules() -> Any:
    """Context in which FLIPD's forward mode uses PyTorch's own derivative rules."""
    import contextlib

    from lidmem.estimators import _autodiff

    @contextlib.contextmanager
    def ctx() -> Any:
        orig = _autodiff.jvp

        def stock(fn: Any, model: Any, primals: Any, tangents: Any, fast: bool = True) -> Any:
            return orig(fn, model, primals, tangents, fast=False)

        _autodiff.jvp = stock
        try:
            yield
        finally:
            _autodiff.jvp = orig

    return ctx()


def _auto_mode(model: Any) -> str:
    """The mode ``ad="auto"`` settled on for ``model`` (after its first FLIPD call)."""
    from lidmem.estimators import _autodiff

    return _autodiff._AUTO_CACHE.get(model, "?")


def _live_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of live tensors allocated while ``fn`` runs (torch.profiler's memory records)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"no {key} in /proc/self/status")


def _memory_child(name: str, what: str) -> None:
    """Run in a fresh process (so that every page is touched for the first time): print the peak
    resident memory (kB) above the loaded model and inputs while ``what`` runs on one batch.
    Linux only: the peak (VmHWM) is reset through ``/proc/self/clear_refs`` after loading."""
    from lidmem._allocator import retain_freed_memory

    retain_freed_memory()  # the allocator policy FLIPD sets, for both sides (else the forward's peak swings by 30%)
    model, fwd, call, shape, B = build(name)
    x = torch.randn(B, *shape)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size to the current one
    base = _status_kb("VmRSS")
    if what == "forward":
        fwd()
    elif what == "default":
        call(x)
    else:
        call(x, ad=what)
    print(json.dumps({"kb": _status_kb("VmHWM") - base}))


def _memory_ratio(name: str, what: str) -> float | str:
    def run(w: str) -> int:
        env = dict(os.environ)
        out = subprocess.run([sys.executable, __file__, "--memory-child", name, w], capture_output=True, text=True, env=env, check=True)
        return int(json.loads(out.stdout.strip().splitlines()[-1])["kb"])

    f = run("forward")
    if f <= 0:
        return "n/a"
    return run(what) / f


NETWORKS: dict[str, str] = {
    "mlp": "MLP 512x4, d=784",
    "digits": "digits UNet (shipped), 1x8x8",
    "cifar": "CIFAR-10 UNet2DModel+attn, 3x32x32",
    "t2i": "text-to-image UNet (shipped), CFG 7.5",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="skip the CIFAR-10-size UNet")
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated subset of " + ",".join(NETWORKS))
    ap.add_argument("--max-exact-dim", type=int, default=1024, help="skip the exact trace above this d")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory columns")
    ap.add_argument("--memory-only", action="store_true", help="only the memory columns")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(*args.memory_child)
        return
    names = [n for n in args.networks.split(",") if n and not (args.quick and n == "cifar")]
    rows = []
    for name in names:
        model, fwd, call, shape, B = build(name)
        d = 1
        for s in shape:
            d *= s
        res: dict[str, Any] = {"network": NETWORKS[name], "d": d, "B": B}
        x = torch.randn(B, *shape)
        if args.memory_only or not args.no_memory:
            fwd()
            call(x)  # one-off allocations outside the measured calls
            live_fwd = _live_peak(fwd)
            res["live default"] = _live_peak(lambda: call(x)) / live_fwd
            res["live reverse"] = "n/a" if name == "t2i" else _live_peak(lambda: call(x, ad="reverse")) / live_fwd
        if args.memory_only:
            res["rss default"] = _memory_ratio(name, "default")
            res["rss reverse"] = "n/a" if name == "t2i" else _memory_ratio(name, "reverse")
            rows.append(res)
            continue
        fwd()
        per_fwd = statistics.median(_seconds(fwd) / B for _ in range(args.repeats))
        res["forward ms/pt"] = 1e3 * per_fwd
        res["default"] = _paired_ratio(lambda: call(x), B, fwd, B, args.repeats)
        with _stock_rules():
            res["fwd stock"] = _paired_ratio(lambda: call(x, ad="forward"), B, fwd, B, args.repeats)
        if name == "t2i":  # image_flipd has forward mode only: nothing for "auto" to choose
            res["forward"], res["reverse"], res["auto / faster"], res["auto picks"] = "= default", "n/a", "n/a", "forward only"
        else:
            res["forward"] = _paired_ratio(lambda: call(x, ad="forward"), B, fwd, B, args.repeats)
            res["reverse"] = _paired_ratio(lambda: call(x, ad="reverse"), B, fwd, B, args.repeats)
            res["auto / faster"] = res["default"] / min(res["forward"], res["reverse"])
            res["auto picks"] = _auto_mode(model)
        if d <= args.max_exact_dim and name != "t2i":
            n_ex = max(1, min(B, 4096 // d))
            xs = x[:n_ex]
            res["exact / d"] = _paired_ratio(lambda: call(xs, trace="exact"), n_ex, fwd, B, max(1, args.repeats // 2)) / d
        else:
            res["exact / d"] = "skipped"
        if not args.no_memory:
            res["rss default"] = _memory_ratio(name, "default")
            res["rss reverse"] = "n/a" if name == "t2i" else _memory_ratio(name, "reverse")
        rows.append(res)
        print(f"done: {NETWORKS[name]}", flush=True)

    cols = ["network", "d", "B"] + ([] if args.memory_only else ["forward ms/pt", "default", "auto picks", "forward", "reverse", "auto / faster", "fwd stock", "exact / d"])
    if args.memory_only or not args.no_memory:
        cols += ["live default", "live reverse", "rss default", "rss reverse"]
    print()
    print(f"FLIPD, 1 Hutchinson probe: time (and peak memory) per point in forward passes (t0={T0}, {args.threads} threads, median of {args.repeats})")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.3f}" if c == "forward ms/pt" else f"{v:.2f}x" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
