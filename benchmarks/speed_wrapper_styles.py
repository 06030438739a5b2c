"""FLIPD's cost by the way a user hands the network over, and the cost of ``ad="auto"``'s check.

Networks: a diffusers ``UNet2DModel`` with attention at 1x16x16 (random weights, batch 64) and
the 784-d MLP of ``benchmarks/speed_flipd.py`` (batch 512). Styles: a module holding the network
as an attribute, a closure ``lambda x, t: unet(x, t).sample``, a ``def``, ``functools.partial``, a
bound method, the bare diffusers model, ``torch.compile(module)`` (inductor) and, for the MLP, a
closure with ``torch.cat``. Columns, ratios of time in one process (estimator and one
forward pass timed alternately, median of ``--repeats`` paired ratios):

- ``auto``: one Hutchinson probe with ``ad="auto"`` (the default) / one forward pass;
- ``forward`` / ``reverse``: the same with ``ad="forward"`` / ``ad="reverse"``;
- ``check %``: the one-time forward-vs-reverse check of ``ad="auto"`` (one point, one probe) as a
  percentage of a 1,000-point FLIPD run (Hutchinson, one probe).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_wrapper_styles.py [--threads 1 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Any

import torch
from torch import nn

T0 = 0.01


def _unet() -> nn.Module:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


class _Holder(nn.Module):
    def __init__(self, net: nn.Module, cat: bool = False) -> None:
        super().__init__()
        self.net, self.cat = net, cat

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cat:
            return self.net(torch.cat([x, t[:, None]], 1))
        return self.net(x, t).sample


class _Caller:
    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t).sample


def _call(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return net(x, t, return_dict=False)[0]


def _styles(name: str) -> tuple[dict[str, Any], torch.Tensor]:
    if name == "unet":
        unet = _unet()
        x = torch.randn(64, 1, 16, 16)
        return {
            "module attribute": _Holder(unet),
            "closure .sample": lambda x, t: unet(x, t).sample,
            "def": lambda x, t: _call(unet, x, t),
            "partial": functools.partial(_call, unet),
            "bound method": _Caller(unet).eps,
            "bare diffusers model": unet,
            "torch.compile(module)": torch.compile(_Holder(unet)),
        }, x
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(785, 1024), nn.SiLU(), nn.Linear(1024, 1024), nn.SiLU(), nn.Linear(1024, 784))
    x = torch.randn(512, 784)
    return {
        "module attribute": _Holder(mlp, cat=True),
        "closure with cat": lambda x, t: mlp(torch.cat([x, t[:, None]], 1)),
        "torch.compile(module)": torch.compile(_Holder(mlp, cat=True)),
    }, x


def _ratio(f: Any, ref: Any, repeats: int) -> float:
    f(), ref()  # warm-up (and compilation)
    ratios = []
    for _ in range(repeats):
        t = time.perf_counter()
        ref()
        r = time.perf_counter() - t
        t = time.perf_counter()
        f()
        ratios.append((time.perf_counter() - t) / r)
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from lidmem import DDPMSchedule, ScoreModel
    from lidmem.estimators import _autodiff, flipd
    from lidmem.estimators.flipd import _probe_forward_mode

    print("| network | style | threads | auto | forward | reverse | check % of 1000-pt run |")
    print("|---|---|---|---|---|---|---|")
    for name in ("unet", "mlp"):
        styles, x = _styles(name)
        sde = DDPMSchedule.linear(1000) if hasattr(DDPMSchedule, "linear") else None
        if sde is None:
            from diffusers import DDPMScheduler

            sde = DDPMSchedule.from_scheduler(DDPMScheduler(num_train_timesteps=1000))
        for style, net in styles.items():
            for th in args.threads:
                torch.set_num_threads(th)
                model = ScoreModel(net, sde, prediction="epsilon")
                tvec = torch.full((x.shape[0],), T0)

                def fwd_pass(model: Any = model, tvec: Any = tvec) -> None:
                    with torch.no_grad():
                        model(x, tvec)

                run = lambda ad, model=model: flipd(model, x, T0, trace="hutchinson", ad=ad)  # noqa: E731
                cols = [_ratio(lambda ad=ad: run(ad), fwd_pass, args.repeats) for ad in ("auto", "forward", "reverse")]
                # the check: one point, one probe; vs 1000 points of FLIPD (per-point time of a batch)
                fresh = ScoreModel(net, sde, prediction="epsilon")
                t = time.perf_counter()
                _autodiff.resolve_ad("auto", fresh, lambda fresh=fresh: _probe_forward_mode(fresh, x, {}))
                check = time.perf_counter() - t
                checks = []
                for _ in range(3):
                    t = time.perf_counter()
                    _probe_forward_mode(fresh, x, {})
                    checks.append(time.perf_counter() - t)
                t = time.perf_counter()
                run("auto")
                per_point = (time.perf_counter() - t) / x.shape[0]
                pct = 100 * statistics.median(checks) / (1000 * per_point)
                mode = _autodiff._AUTO_CACHE.get(model, "?")
                print(f"| {name} | {style} | {th} | {cols[0]:.2f}x ({mode}) | {cols[1]:.2f}x | {cols[2]:.2f}x | {pct:.2f}% (first {100 * check / (1000 * per_point):.1f}%) |", flush=True)


if __name__ == "__main__":
    main()
