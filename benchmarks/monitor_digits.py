"""Does the memorization monitor catch planted duplicates while a digits UNet trains, and what does it cost?

    OMP_NUM_THREADS=1 python benchmarks/monitor_digits.py            # small default (minutes on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/monitor_digits.py --steps 4000 --n-base 1797 --every 250

Two runs of ``lidmem.diffusion.training.train_score_model`` (the ``lidmem train`` UNet
``UNetScoreNet(8, (32, 64))``, VP-SDE, epsilon, EMA 0.999) on the first ``--n-base`` scikit-learn
digits: one where ``--n-dup`` of them appear ``--copies`` times (planted memorization), one without
duplicates (false-alarm check). The monitor (:class:`lidmem.monitor.MemorizationMonitor`, defaults:
4 Hutchinson probes, t0 from the training data, no held-out set, as in ``lidmem train``) watches the
EMA weights on ``--probes`` distinct training images that include every duplicated one. At each
scored step the benchmark also samples ``--samples`` images (probability-flow ODE) and counts the
fraction that ``find_copies`` labels copies (not part of the monitor's cost).

Printed per run: a table per scored step (signal, flagged, AUROC of -LID_theta against the planted
labels, the copy fraction of the samples), the first alarm, the AUROC and copy fraction there, and
the monitor's cost as a ratio of the training time (monitor seconds / training seconds without the
monitor and the sampling; the default ``--every`` is lidmem train's suggestion, 250).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def run(images: np.ndarray, dup_ids: np.ndarray, args: argparse.Namespace, label: str) -> dict:
    from lidmem.diffusion.sampling import sample_ode
    from lidmem.diffusion.score import ScoreModel
    from lidmem.diffusion.sde import VPSDE
    from lidmem.diffusion.training import train_score_model
    from lidmem.diffusion.unet import UNetScoreNet
    from lidmem.memorization.copy_detection import find_copies
    from lidmem.memorization.metrics import auroc
    from lidmem.monitor import MemorizationMonitor

    n_base = args.n_base
    rng = np.random.default_rng(1)
    others = np.setdiff1d(np.arange(n_base), dup_ids)
    probe_ids = np.sort(np.r_[dup_ids, rng.choice(others, args.probes - len(dup_ids), replace=False)])
    is_dup = np.isin(probe_ids, dup_ids)
    torch.manual_seed(0)
    net = UNetScoreNet(8, in_channels=1, block_out_channels=(32, 64), norm_num_groups=8)
    sde = VPSDE()
    state: dict = {"rows": [], "sample_s": 0.0}

    def callback(step: int, model_net: torch.nn.Module, ema: torch.nn.Module) -> None:
        if step % args.every:
            return None
        if "mon" not in state:
            state["mon"] = MemorizationMonitor(ScoreModel(ema, sde, prediction="epsilon"), images[probe_ids], train_data=images,
                                               every=args.every, image_ids=probe_ids.tolist())
        s = state["mon"].score(step)
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            x = sample_ode(ScoreModel(ema, sde, prediction="epsilon").eval(), (args.samples, 1, 8, 8), steps=args.sampling_steps,
                           denoise=True, seed=step, progress=False)
        copies = float(find_copies(x.clamp(-1, 1).numpy(), images).is_copy.mean())
        state["sample_s"] += time.perf_counter() - t
        df = state["mon"].frame
        lid = df[df.step == step].set_index("image_id").loc[probe_ids, "lid"].to_numpy()
        au = auroc(is_dup, lid, higher_is_positive=False) if is_dup.any() else float("nan")
        state["rows"].append(dict(step=step, signal=s.signal, n_flagged=s.n_flagged, memorizing=s.memorizing,
                                  flagged_dup=int(np.isin(s.flagged, dup_ids).sum()), auroc=au, copies=copies, mon_s=s.seconds))
        return None

    t0 = time.perf_counter()
    train_score_model(net, images, sde, prediction="epsilon", steps=args.steps, batch_size=args.batch, lr=1e-3, ema_decay=0.999,
                      seed=0, callback=callback, progress=False)
    total = time.perf_counter() - t0
    rows = state["rows"]
    mon_s = sum(r["mon_s"] for r in rows)
    train_s = total - mon_s - state["sample_s"]
    print(f"\n## {label}: {len(images)} rows, {args.probes} probes ({int(is_dup.sum())} duplicated), t0 = {state['mon'].t0_:.4f}")
    print("| step | signal | flagged (dup) | AUROC dup vs -LID | sampled copies | alarm |")
    print("|---:|---:|---:|---:|---:|:---:|")
    for r in rows:
        print(f"| {r['step']} | {r['signal']:.3f} | {r['n_flagged']} ({r['flagged_dup']}) | {r['auroc']:.3f} | {r['copies']:.3f} | {'yes' if r['memorizing'] else ''} |")
    first = next((r for r in rows if r["memorizing"]), None)
    if first is None:
        print("first alarm: none")
    else:
        print(f"first alarm: step {first['step']}, AUROC {first['auroc']:.3f}, sampled copies {first['copies']:.3f}")
    print(f"cost: monitor {mon_s:.1f} s / training {train_s:.1f} s = {mon_s / train_s:.3f} at every={args.every} "
          f"(wall seconds under load from parallel jobs; ratio from one process)")
    return {"first": first, "ratio": mon_s / train_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-base", type=int, default=400)
    p.add_argument("--n-dup", type=int, default=10)
    p.add_argument("--copies", type=int, default=30)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--probes", type=int, default=64)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--sampling-steps", type=int, default=10)
    p.add_argument("--runs", nargs="+", default=["planted", "clean"], choices=["planted", "clean"])
    args = p.parse_args()
    from lidmem.data.images import load_digits_images

    base = load_digits_images()[0][: args.n_base].astype(np.float32)
    dup_ids = np.sort(np.random.default_rng(0).choice(args.n_base, args.n_dup, replace=False))
    print(f"torch threads {torch.get_num_threads()}; steps {args.steps}, batch {args.batch}, every {args.every}")
    if "planted" in args.runs:
        planted = np.concatenate([base, np.repeat(base[dup_ids], args.copies - 1, axis=0)])
        run(planted, dup_ids, args, f"planted: {args.n_dup} digits x {args.copies} copies")
    if "clean" in args.runs:
        run(base, dup_ids, args, "no duplicates (AUROC: the same ids, not duplicated here)")


if __name__ == "__main__":
    main()
