"""Cost of FLIPD and the normal bundle per point, as a multiple of one forward pass of the same network.

For each network, the reference is ``model(x, t)`` on a batch of ``B`` points under
``torch.no_grad()`` (time per point = time / B). Each estimator is timed on the same batch size
of points where feasible (fewer points for the exact trace and the normal bundle on large ``d``,
which cost ``d`` and ``4 d`` network rows per point), after one warm-up call, taking the median
of ``--repeats`` paired ratios. "Hutch. 1" uses forward-mode AD (``ad="forward"``, the
default), "Hutch. 1 rev" reverse mode (``ad="reverse"``). The exact trace and NB are timed on
fewer points (``4096 // d`` and ``8192 // (4 d)``), i.e. with larger model batches than the forward
reference, and skipped above ``--max-exact-dim``; (forward and estimator timed alternately, so that load from
other processes on a shared machine affects both). Untrained networks: the cost does not depend on the weights.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_flipd.py [--repeats 7] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lidmem import ScoreModel, VPSDE
from lidmem.estimators import flipd, normal_bundle


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _paired_ratio(fn, n_pts: int, fwd, B: int, repeats: int) -> float:
    """Median over repeats of (time of fn per point) / (time of one forward per point).

    Forward and estimator runs alternate, so that load from other processes on a shared machine
    affects both sides of each ratio alike.
    """
    fn()
    fwd()  # warm-up
    ratios = []
    for _ in range(repeats):
        tf = _seconds(fwd) / B
        tm = _seconds(fn) / n_pts
        tf = min(tf, _seconds(fwd) / B)
        ratios.append(tm / tf)
    return statistics.median(ratios)


def _networks(quick: bool):
    from lidmem.diffusion.mlp import MLPScoreNet
    from lidmem.diffusion.unet import UNetScoreNet

    nets = [
        ("MLP 256x3, d=64", MLPScoreNet(64, hidden=256, depth=3), (64,), 512),
        ("MLP 512x4, d=784", MLPScoreNet(784, hidden=512, depth=4), (784,), 256),
        ("UNet2D (16,32), 1x16x16", UNetScoreNet(16, in_channels=1, block_out_channels=(16, 32), norm_num_groups=8), (1, 16, 16), 64),
    ]
    if not quick:
        nets.append(
            ("UNet2D (16,32)+attn, 3x32x32", UNetScoreNet(32, in_channels=3, block_out_channels=(16, 32), norm_num_groups=8, attention=True), (3, 32, 32), 32)
        )
    return nets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="skip the 3x32x32 UNet")
    ap.add_argument("--max-exact-dim", type=int, default=1024, help="skip the exact trace and NB above this d (they cost d and 4d rows per point)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = 0.01
    rows = []
    for name, net, shape, B in _networks(args.quick):
        model = ScoreModel(net.eval(), VPSDE(), prediction="epsilon")
        for p in model.parameters():
            p.requires_grad_(False)
        d = 1
        for s in shape:
            d *= s
        x = torch.randn(B, *shape)
        tvec = torch.full((B,), t0)

        def fwd():
            with torch.no_grad():
                model(x, tvec)

        fwd()
        per_fwd = statistics.median(_seconds(fwd) / B for _ in range(args.repeats))
        res = {"network": name, "d": d, "B": B, "forward ms/pt": 1e3 * per_fwd}
        for label, n_pts, kw in [
            ("Hutch. 1", B, dict(trace="hutchinson", n_probes=1)),
            ("Hutch. 1 rev", B, dict(trace="hutchinson", n_probes=1, ad="reverse")),
            ("Hutch. 4", B, dict(trace="hutchinson", n_probes=4)),
            ("exact", max(1, min(B, 4096 // d)), dict(trace="exact")),
        ]:
            if label == "exact" and d > args.max_exact_dim:
                res[label] = "skipped"
                continue
            xs = x[:n_pts]
            reps = args.repeats if label != "exact" else max(1, args.repeats // 2)
            res[label] = _paired_ratio(lambda: flipd(model, xs, t0, batch_size=n_pts, progress=False, **kw), n_pts, fwd, B, reps)
        if d > args.max_exact_dim:
            res["NB (k=4d)"] = "skipped"
            rows.append(res)
            print(f"done: {name}", flush=True)
            continue
        n_nb = max(1, min(B, 8192 // (4 * d)))
        xs = x[:n_nb]
        res["NB (k=4d)"] = _paired_ratio(lambda: normal_bundle(model, xs, t0, progress=False), n_nb, fwd, B, max(1, args.repeats // 2))
        rows.append(res)
        print(f"done: {name}", flush=True)

    cols = ["network", "d", "B", "forward ms/pt", "Hutch. 1", "Hutch. 1 rev", "Hutch. 4", "exact", "NB (k=4d)"]
    print()
    print(f"FLIPD / NB cost per point in forward passes (t0={t0}, {args.threads} threads, median of {args.repeats})")
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
