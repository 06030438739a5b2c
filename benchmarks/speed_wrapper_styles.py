"""FLIPD's cost by the way a user hands the network over, and the cost of ``ad="auto"``'s check.

Networks: a diffusers ``UNet2DModel`` with attention at 1x16x16 (random weights, batch 64) and
the 784-d MLP of ``benchmarks/speed_flipd.py`` (batch 512). Styles: a module holding the network
as an attribute, a closure ``lambda x, t: unet(x, t).sample``, a ``def``, ``functools.partial``, a
bound method, the bare diffusers model, ``torch.compile(module)`` (inductor) and, for the MLP, a
closure with ``torch.cat``. Columns, ratios of time in one process (estimator and one
forward pass timed alternately, ``--repeats`` times each, after a warm-up):

- ``auto``: one Hutchinson probe with ``ad="auto"`` (the default) / one forward pass, as the
  ratio of the fastest of the repeats on each side: the cost on an idle machine (load from other
  processes, interrupts and frequency changes only ever add time, and the median of paired
  ratios moved by +-0.1 between identical rows of one run);
- ``forward`` / ``reverse``: the same with ``ad="forward"`` / ``ad="reverse"``;
- ``auto / faster``: ``auto`` over the faster of ``forward`` and ``reverse`` (issue 20's goal: at
  most 1.10);
- ``auto, median of pairs``: ``auto`` again, as the median of the paired ratios (the statistic
  of the tables before 2026-12-08; a noisier view of the same cost);
- ``live auto`` / ``live reverse``: peak bytes of live tensors while FLIPD runs on the batch
  (``torch.profiler`` memory records, as in ``benchmarks/speed_flipd.py``) over the same for one
  forward pass (for ``torch.compile`` the uncompiled forward pass): forward mode's memory
  advantage;
- ``check %``: the one-time forward-vs-reverse check of ``ad="auto"`` as a percentage of a
  1,000-point FLIPD run with one Hutchinson probe (the cheapest run, so the largest share; the
  default exact trace costs ``d`` times more). With Hutchinson probes the check is one reverse
  pass at one point, compared with the first batch's own forward-mode row
  (:func:`lidmem.estimators._autodiff.agrees_with_reverse`): the median of 3 such passes and, in
  brackets, the first on a new model. (An end-to-end column, a new model's first 1,000-point
  ``ad="auto"`` run minus the same run with ``ad="forward"``, was tried and dropped: on the shared
  2-core machine it swung by +-20% from pair to pair, far above the check's cost.)

For ``torch.compile`` the reference forward pass is the *compiled* one, while FLIPD's JVP runs the
module's original Python code (compiled graphs lose the tangents); the row ``... vs eager forward``
gives the same ratios against the uncompiled forward pass.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_wrapper_styles.py [--threads 1 2] [--repeats 9] [--networks unet mlp]
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


def _timings(f: Any, ref: Any, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``f`` and of ``ref``, ``repeats`` each, timed alternately after a warm-up."""
    f(), ref()  # warm-up (and compilation)
    tf, tr = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ref()
        tr.append(time.perf_counter() - t)
        t = time.perf_counter()
        f()
        tf.append(time.perf_counter() - t)
    return tf, tr


def _ratio(f: Any, ref: Any, repeats: int, stat: str = "min") -> float:
    """``f``'s time over ``ref``'s: ``"min"``, the ratio of the fastest runs (the cost on an idle
    machine: other load only ever adds time); ``"pairs"``, the median of the paired ratios."""
    tf, tr = _timings(f, ref, repeats)
    if stat == "min":
        return min(tf) / min(tr)
    return statistics.median(a / b for a, b in zip(tf, tr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--networks", nargs="+", choices=["unet", "mlp"], default=["unet", "mlp"])
    args = ap.parse_args()

    from lidmem import DDPMSchedule, ScoreModel
    from lidmem.estimators import _autodiff, flipd

    from speed_flipd import _live_peak  # the benchmark next to this one (same folder)

    print("| network | style | threads | auto | forward | reverse | auto / faster | auto, median of pairs | live auto | live reverse | check % of 1000-pt run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.networks:
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
                pairs = _ratio(lambda: run("auto"), fwd_pass, args.repeats, stat="pairs")
                eager = None
                if _autodiff.is_compiled(net):
                    plain = ScoreModel(_autodiff.unwrap_compiled(net), sde, prediction="epsilon")

                    def eager_pass(plain: Any = plain, tvec: Any = tvec) -> None:
                        with torch.no_grad():
                            plain(x, tvec)

                    eager = [_ratio(lambda ad=ad: run(ad), eager_pass, args.repeats) for ad in ("auto", "forward", "reverse")]
                live = ""
                if th == args.threads[0]:  # memory does not depend on the thread count
                    # compiled forwards allocate through inductor's buffer reuse, which the profiler
                    # does not see as tensors: memory is measured against the eager forward there
                    live_fwd = _live_peak(fwd_pass if eager is None else eager_pass)
                    live = f"{_live_peak(lambda: run('auto')) / live_fwd:.2f}x | {_live_peak(lambda: run('reverse')) / live_fwd:.2f}x"
                else:
                    live = "same | same"
                # the check (Hutchinson): one reverse pass at the first batch's point 0 with probe 0,
                # compared with that batch's own forward-mode row; vs 1000 points of FLIPD
                xt0, v0 = x[:1] * 0.99, torch.ones_like(x[:1])
                fresh = ScoreModel(net, sde, prediction="epsilon")
                t1 = torch.full((1,), T0)
                with torch.no_grad():
                    _, jv0 = _autodiff.jvp(lambda inp, fresh=fresh: fresh(inp, t1), fresh, xt0, v0)
                checks = []
                for _ in range(4):
                    t = time.perf_counter()
                    _autodiff.agrees_with_reverse(lambda inp, fresh=fresh: fresh(inp, t1), xt0, v0, jv0)
                    checks.append(time.perf_counter() - t)
                t = time.perf_counter()
                run("auto")
                per_point = (time.perf_counter() - t) / x.shape[0]
                pct = 100 * statistics.median(checks[1:]) / (1000 * per_point)
                mode = _autodiff._AUTO_CACHE.get(model, "?")
                first = f"{pct:.2f}% (first {100 * checks[0] / (1000 * per_point):.1f}%)"
                best = cols[0] / min(cols[1], cols[2])
                print(f"| {name} | {style} | {th} | {cols[0]:.2f}x ({mode}) | {cols[1]:.2f}x | {cols[2]:.2f}x | {best:.2f} | {pairs:.2f}x | {live} | {first} |", flush=True)
                if eager is not None:
                    print(f"| {name} | {style} vs eager forward | {th} | {eager[0]:.2f}x | {eager[1]:.2f}x | {eager[2]:.2f}x | "
                          f"{eager[0] / min(eager[1], eager[2]):.2f} | | | | |", flush=True)


if __name__ == "__main__":
    main()
