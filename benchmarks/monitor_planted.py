"""Does the memorization monitor of ``lidmem train --monitor-every`` catch planted duplicates in time, and what does it cost?

    OMP_NUM_THREADS=1 python benchmarks/monitor_planted.py run --data digits --planted --seed 0 --copies 30 --out build/monitor
    OMP_NUM_THREADS=1 python benchmarks/monitor_planted.py run --data digits --clean --seed 0 --out build/monitor
    OMP_NUM_THREADS=1 python benchmarks/monitor_planted.py run --data patches --planted --seed 0 --out build/monitor
    OMP_NUM_THREADS=1 python benchmarks/monitor_planted.py report --out build/monitor [--every 100]
    OMP_NUM_THREADS=1 python benchmarks/monitor_planted.py audit --out build/monitor --run digits-planted-s0-x30

``run`` trains one model with :func:`lidmem.workflows.train.train_image_model` - the function
behind ``lidmem train`` - with ``monitor_every=--every`` and its default 256 probes (distinct
training images drawn under the seed, no held-out set, t0 from the training data, EMA weights),
so the monitor and its log ``<run>/model.monitor.parquet`` are exactly those of
``lidmem train --monitor-every``. Data (``--seed`` picks the planted images, the training seed and
the probes):

- ``digits``: the first ``--n-base`` (400) scikit-learn digits (8x8); planted: ``--n-dup`` (10) of
  them drawn under the seed get ``--copies - 1`` extra copies (x30: 690 rows); UNet (32, 64),
  1,500 steps, batch 64;
- ``patches``: :func:`lidmem.data.images.load_patches_with_duplicates` (400 grey 16x16 tiles of
  scikit-learn's two photos drawn under the seed; planted: 10 of them x ``--copies`` (20));
  UNet (16, 32, 64), 1,500 steps, batch 128 (as the former epsilon model of benchmarks/t0_transfer.py, now benchmarks/detection_scores.py).

Clean runs (``--clean``) train on the same base images without duplicates. Every
``--sample-every`` steps the run also draws ``--samples`` (256) images (probability-flow ODE,
10 Heun steps, Tweedie-denoised) from the EMA weights and labels copies with
:func:`lidmem.memorization.copy_detection.find_copies` (defaults), and at ``--checkpoint-steps``
it saves the EMA weights; neither is part of the monitor's cost. ``<run>/copies.csv`` holds,
per sampled step, the number of copies and the training images they copy.

``report`` re-evaluates the monitor's alarm rule (:func:`lidmem.monitor.evaluate_log`, the very
code :class:`~lidmem.monitor.MemorizationMonitor` runs at each scored step) on every run's log,
thinned to ``--every`` (a multiple of the runs' scoring interval), and prints per run: the first
alarm, the AUROC of -LID_theta against the planted labels there, the sampled-copy fraction there
(Wilson 95% interval) and the first step where that fraction passes 5%, the flagged images that
are not planted, and the monitor's cost (scoring seconds per scored step x scored steps / training
seconds without the monitor, sampling and checkpoints).

``audit`` runs :func:`lidmem.memorization.audit.audit_memorization` (``--audit-samples`` samples) on a
run's saved checkpoints and prints, per checkpoint, the copies the audit finds, the training
images they copy and how many of those the monitor flagged at that step.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

RUN_FILES = ("model.monitor.parquet", "copies.csv", "run.json")


def planted_set(data: str, planted: bool, seed: int, copies: int, n_dup: int, n_base: int) -> np.ndarray:
    """The training images (n, 1, s, s) in [-1, 1]."""
    from lidmem.data.images import load_digits_images, load_patches_with_duplicates

    if data == "digits":
        base = load_digits_images()[0][:n_base].astype(np.float32)
        if not planted:
            return base
        dup = np.sort(np.random.default_rng(seed).choice(n_base, n_dup, replace=False))
        return np.concatenate([base, np.repeat(base[dup], copies - 1, axis=0)])
    d = load_patches_with_duplicates(n_images=n_base, n_duplicated=n_dup if planted else 0, n_copies=copies, seed=seed)
    return np.asarray(d.images, dtype=np.float32)


def duplicated_ids(images: np.ndarray) -> np.ndarray:
    """Row of the first occurrence of every image that appears more than once."""
    from lidmem.neighbors import dedupe_rows

    first, _, counts = dedupe_rows(images.reshape(len(images), -1))
    return np.sort(first[counts > 1])


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    c = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    m = (p + z * z / (2 * n)) / (1 + z * z / n)
    return max(0.0, m - c), min(1.0, m + c)


def run(args: argparse.Namespace) -> Path:
    from lidmem.diffusion.checkpoint import save_checkpoint
    from lidmem.diffusion.sampling import sample_ode
    from lidmem.diffusion.score import ScoreModel
    from lidmem.diffusion.sde import VPSDE
    from lidmem.memorization.copy_detection import find_copies
    from lidmem.monitor import preserved_training_state
    from lidmem.workflows.train import train_image_model, train_settings

    copies = args.copies or (30 if args.data == "digits" else 20)
    name = (f"{args.data}{'-' + args.preset if args.preset else ''}-{'planted' if args.planted else 'clean'}-s{args.seed}"
            + (f"-x{copies}" if args.planted else "")
            + (f"-n{args.n_base}" if args.n_base != 400 else "") + (f"-d{args.n_dup}" if args.planted and args.n_dup != 10 else ""))
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    for f in RUN_FILES:
        (out / f).unlink(missing_ok=True)
    images = planted_set(args.data, args.planted, args.seed, copies, args.n_dup, args.n_base)
    dup = duplicated_ids(images)
    shape = tuple(images.shape[1:])
    recipe = train_settings(int(shape[-1]), args.preset)
    if args.preset:  # the preset's recipe (lidmem train --preset)
        steps, batch, channels, lr = args.steps or recipe.steps, args.batch or recipe.batch_size, recipe.block_out_channels, recipe.lr
    else:
        steps, batch, lr = args.steps or 1500, args.batch or (64 if args.data == "digits" else 128), 1e-3
        channels = (32, 64) if args.data == "digits" else (16, 32, 64)
    ckpt_steps = set(args.checkpoint_steps)
    prediction = recipe.prediction
    from lidmem.monitor import DEFAULT_EVERY

    every = DEFAULT_EVERY if args.every is None else args.every
    rows: list[dict] = []
    extra_s = {"s": 0.0}
    if args.save_every:
        (out / "ema").mkdir(exist_ok=True)
        for f in (out / "ema").glob("step*.pt"):
            f.unlink()

    def bench(step: int, net: torch.nn.Module, ema: torch.nn.Module) -> None:
        saving = bool(args.save_every) and step % args.save_every == 0
        if step % args.sample_every and step not in ckpt_steps and not saving:
            return None
        t = time.perf_counter()
        with preserved_training_state(ema), torch.no_grad():
            if saving:  # the EMA weights, for `replay` (the monitor scores exactly these)
                torch.save(ema.state_dict(), out / "ema" / f"step{step}.pt")
            if step in ckpt_steps:
                save_checkpoint(out / f"step{step}.safetensors", ema, sde=VPSDE(), prediction=prediction, data_shape=shape,
                                extra={"data_range": [-1.0, 1.0], "step": step})
            if step % args.sample_every == 0:
                x = sample_ode(ScoreModel(ema, VPSDE(), prediction=prediction), (args.samples, *shape), steps=args.sampling_steps,
                               denoise=True, seed=step, progress=False)
                m = find_copies(x.clamp(-1, 1).numpy(), images)
                is_copy = m.labels != "none"
                of_planted = is_copy & np.isin(m.nn_index, dup)
                rows.append({"step": step, "n": len(is_copy), "copies": int(is_copy.sum()),
                             "exact_copies": int((m.labels == "exact_copy").sum()), "planted_copies": int(of_planted.sum()),
                             "in_range": float((x.abs() <= 1).flatten(1).all(1).float().mean()),
                             "copied_ids": " ".join(str(int(i)) for i in np.unique(m.nn_index[is_copy]))})
        extra_s["s"] += time.perf_counter() - t
        return None

    t0 = time.perf_counter()
    train_image_model(images, out / "model.safetensors", preset=args.preset, steps=steps, batch_size=batch, lr=lr,
                      block_out_channels=channels, checkpoint_every=10**9, resume=False, seed=args.seed, progress=False,
                      monitor_every=every or None, monitor_probes=args.probes, callback=bench)
    total = time.perf_counter() - t0
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "copies.csv", index=False)
    mon_s = 0.0
    if every:
        log = pd.read_parquet(out / "model.monitor.parquet")
        mon_s = float(log.groupby("step")["seconds"].first().sum())
    meta = {"data": args.data, "planted": bool(args.planted), "seed": args.seed, "copies": copies if args.planted else 1,
            "n_rows": int(len(images)), "n_base": args.n_base, "n_dup": args.n_dup, "duplicated_ids": dup.tolist(), "steps": steps, "batch": batch, "channels": list(channels),
            "preset": args.preset, "prediction": prediction, "lr": lr, "save_every": args.save_every,
            "every": every, "probes": args.probes, "samples": args.samples, "total_s": total, "monitor_s": mon_s,
            "extra_s": extra_s["s"], "train_s": total - mon_s - extra_s["s"], "threads": torch.get_num_threads()}
    (out / "run.json").write_text(json.dumps(meta, indent=1))
    print(f"{name}: {len(images)} rows ({len(dup)} duplicated images), {total:.0f} s total, monitor {mon_s:.1f} s, "
          f"train {meta['train_s']:.0f} s; wrote {out}")
    return out


def _thin(log, every: int):
    steps = np.array(sorted(log["step"].unique()))
    return log[log["step"].isin(steps[steps % every == 0])]


def report(args: argparse.Namespace) -> None:
    import pandas as pd

    from lidmem.memorization.metrics import auroc
    from lidmem.monitor import DEFAULT_RULE, evaluate_log, log_scores

    runs = sorted(p.parent for p in Path(args.out).glob("*/run.json") if (p.parent / f"{args.log}.monitor.parquet").is_file())
    window = args.window
    print(f"rule: lidmem.monitor defaults (window={window}), logs {args.log}.monitor.parquet scored every {args.every or 'run'} steps; "
          "copies: find_copies on the samples")
    print("| run | rows | first alarm | AUROC there: -LID_theta | AUROC there: monitor score | probes planted | flagged (planted) there "
          "| of them copied later | sampled copies there [95% CI] | first step copies > 5% | flagged not planted, any step | cost at every |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in runs:
        meta = json.loads((d / "run.json").read_text())
        if args.log == "replay":
            meta["every"] = json.loads((d / "replay.json").read_text())["every"]
        every = args.every or meta["every"]
        if every % meta["every"]:
            print(f"| {d.name} | every={every} is not a multiple of the run's {meta['every']} |")
            continue
        log = _thin(pd.read_parquet(d / f"{args.log}.monitor.parquet"), every)
        summ = evaluate_log(log, window=window)
        cop = pd.read_csv(d / "copies.csv").set_index("step")
        dup = set(meta["duplicated_ids"])
        first = next((s for s in summ if s.memorizing), None)
        over = cop[cop.copies / cop.n > 0.05]
        false_flags = sorted({i for s in summ for i in s.flagged if i not in dup})
        per_step = float(log.groupby("step")["seconds"].first().mean())
        # a replay's scoring seconds are not comparable with the run's training seconds: `cost` measures it
        cost = per_step * (meta["steps"] // every) / meta["train_s"] if meta["train_s"] > 0 and args.log == "model" else float("nan")
        tr = log[log.split == "train"]
        n_pl = int(tr[tr.step == tr.step.min()].image_id.isin(dup).sum())
        if first is None:
            cells = ["none", "", "", "", "", ""]
        else:
            g = tr[tr.step == first.step]
            au = auroc(g.image_id.isin(dup).to_numpy(), g.lid.to_numpy(), higher_is_positive=False) if dup else float("nan")
            # the monitor's own per-image score: the lower of the level z and the fall z, each over its threshold
            sc = log_scores(log, window=window)
            j = int(np.flatnonzero(sc["steps"] == first.step)[0])
            score = np.fmin(sc["z_train"][j] / DEFAULT_RULE["z_threshold"],
                            np.nan_to_num(sc["fall_train"][j], nan=np.inf) / DEFAULT_RULE["fall_threshold"])
            au_m = auroc(np.isin(sc["ids"], list(dup)), score, higher_is_positive=False) if dup else float("nan")
            later = {int(i) for st, ids in cop["copied_ids"].fillna("").items() if st > first.step for i in str(ids).split()}
            n_later = sum(i in later for i in first.flagged)
            near = cop.index[cop.index <= first.step]
            if len(near):
                r = cop.loc[near.max()]
                lo, hi = wilson(int(r.copies), int(r.n))
                ctext = f"{r.copies / r.n:.3f} [{lo:.3f}, {hi:.3f}] (step {near.max()})"
            else:
                ctext = "n/a"
            cells = [str(first.step), f"{au:.3f}" if dup else "n/a", f"{au_m:.3f}" if dup else "n/a",
                     f"{first.n_flagged} ({sum(i in dup for i in first.flagged)})", f"{n_later} of {first.n_flagged}", ctext]
        print(f"| {d.name} | {meta['n_rows']} | {cells[0]} | {cells[1]} | {cells[2]} | {n_pl} | {cells[3]} | {cells[4]} | {cells[5]} | "
              f"{over.index.min() if len(over) else 'never'} | {len(false_flags)} | {cost:.3f} |")
    print("cost: monitor seconds per scored step x scored steps / training seconds (wall clock, under load from parallel jobs; "
          "replayed logs: scoring seconds of the replay over the run's training: unreliable, use `cost`)")


def audit(args: argparse.Namespace) -> None:
    import pandas as pd

    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.memorization.audit import audit_memorization
    from lidmem.monitor import evaluate_log

    d = Path(args.out) / (args.run or "digits-planted-s0-x30")
    meta = json.loads((d / "run.json").read_text())
    copies = meta["copies"]
    images = planted_set(meta["data"], meta["planted"], meta["seed"], copies, meta.get("n_dup", args.n_dup), meta.get("n_base", args.n_base))
    log = pd.read_parquet(d / "model.monitor.parquet")
    every = args.every or int(meta["every"])
    summ = {s.step: s for s in evaluate_log(_thin(log, every))}
    probes = set(int(i) for i in log.image_id.unique())
    dup = set(meta["duplicated_ids"])
    print(f"## audit of {d.name}'s checkpoints ({args.audit_samples} samples each; monitor rule at every={every})")
    print("| step | audit copies | training images copied | of them probes | of those flagged by the monitor | flagged not copied | alarm |")
    print("|---:|---:|---:|---:|---:|---:|:---:|")
    for ck in sorted(d.glob("step*.safetensors"), key=lambda p: int(p.stem[4:])):
        step = int(ck.stem[4:])
        res = audit_memorization(load_score_model(ck), images, num_samples=args.audit_samples, num_inference_steps=args.sampling_steps,
                                 normal_bundle=None, t0_sweep=None, seed=step, progress=False)
        df = res.samples
        cp = df[df["copy_label"] != "none"] if "copy_label" in df else df[df["is_copy"]]
        copied = {int(i) for i in cp["nn_train_index"]}
        s = summ.get(step)
        flagged = set(s.flagged) if s is not None else set()
        in_probes = copied & probes
        print(f"| {step} | {len(cp)} / {len(df)} | {len(copied)} ({len(copied & dup)} planted) | {len(in_probes)} | "
              f"{len(in_probes & flagged)} | {len(flagged - copied)} | {'yes' if s is not None and s.memorizing else ''} |")


def replay(args: argparse.Namespace) -> None:
    """Score a run's saved EMA weights (``run --save-every``) with the monitor of ``lidmem train --monitor-every``."""
    from lidmem.diffusion.unet import UNetScoreNet
    from lidmem.monitor import DEFAULT_EVERY, DEFAULT_PROBE_IMAGES
    from lidmem.workflows.train import _monitor_callback

    runs = [Path(args.out) / args.run] if args.run else sorted(p.parent for p in Path(args.out).glob("*/ema"))
    for d in runs:
        meta = json.loads((d / "run.json").read_text())
        every = args.every or DEFAULT_EVERY
        if not meta.get("save_every") or every % meta["save_every"]:
            print(f"{d.name}: weights saved every {meta.get('save_every')} steps; --every {every} must be a multiple")
            continue
        images = planted_set(meta["data"], meta["planted"], meta["seed"], meta["copies"], meta.get("n_dup", args.n_dup), meta.get("n_base", args.n_base))
        ch = tuple(meta["channels"])
        net = UNetScoreNet(int(images.shape[-1]), in_channels=int(images.shape[1]), block_out_channels=ch,
                           norm_num_groups=8 if all(c % 8 == 0 for c in ch) else 1)
        (d / "replay.monitor.parquet").unlink(missing_ok=True)
        n = args.probes or DEFAULT_PROBE_IMAGES
        cb = _monitor_callback(images, d / "replay.safetensors", every, n, False, meta["seed"], False, meta.get("prediction", "epsilon"))
        steps = sorted(s for s in (int(p.stem[4:]) for p in (d / "ema").glob("step*.pt")) if s % every == 0)
        cpu = 0.0
        for step in steps:
            net.load_state_dict(torch.load(d / "ema" / f"step{step}.pt"))
            c = time.process_time()
            cb(step, net, net)
            cpu += time.process_time() - c
        (d / "replay.json").write_text(json.dumps({"every": every, "probes": n, "cpu_s": cpu, "steps": len(steps)}, indent=1))
        print(f"{d.name}: replayed {len(steps)} steps (every {every}, {n} probe images), {cpu:.0f} CPU s")


def cost(args: argparse.Namespace) -> None:
    """CPU time (``time.process_time``) of the same training run with and without the monitor."""
    import tempfile

    from lidmem.monitor import DEFAULT_EVERY, DEFAULT_HUTCHINSON, DEFAULT_PROBE_IMAGES
    from lidmem.workflows.train import train_image_model

    copies = args.copies or (30 if args.data == "digits" else 20)
    images = planted_set(args.data, args.planted, args.seed, copies, args.n_dup, args.n_base)
    every = args.every if args.every else DEFAULT_EVERY
    steps = args.steps or 10 * every
    batch = args.batch or (64 if args.data == "digits" else 128)
    channels = (32, 64) if args.data == "digits" else (16, 32, 64)
    if args.preset:  # the preset's channels (train_image_model is given block_out_channels=None)
        from lidmem.workflows.train import train_settings

        channels = tuple(train_settings(int(images.shape[-1]), args.preset).block_out_channels)
    print(f"{args.data}{' --preset ' + args.preset if args.preset else ''}: {steps} steps, batch {batch}, channels {channels}; monitor every {every}, "
          f"{args.probes or DEFAULT_PROBE_IMAGES} probe images x {DEFAULT_HUTCHINSON} Hutchinson probes")
    from lidmem.monitor import MemorizationMonitor

    # the CPU time spent inside the monitor's scoring, counted in the run with it (benchmark-only wrapper)
    inside = {"s": 0.0}
    score = MemorizationMonitor.score

    def timed(self, *a, **k):
        c = time.process_time()
        try:
            return score(self, *a, **k)
        finally:
            inside["s"] += time.process_time() - c

    MemorizationMonitor.score = timed  # type: ignore[method-assign]
    print("| repeat | CPU s without | CPU s with | with / without - 1 | scoring CPU s inside the run with | scoring / rest of that run |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in range(args.repeats):
        cpu = {}
        inside["s"] = 0.0
        for with_monitor in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                c = time.process_time()
                train_image_model(images, Path(tmp) / "m.safetensors", preset=args.preset, steps=steps, batch_size=batch, lr=1e-3,
                                  block_out_channels=None if args.preset else channels, checkpoint_every=10**9, resume=False,
                                  seed=args.seed, progress=False, monitor_every=every if with_monitor else None,
                                  monitor_probes=args.probes or None)
                cpu[with_monitor] = time.process_time() - c
        m = inside["s"]
        print(f"| {r} | {cpu[False]:.1f} | {cpu[True]:.1f} | {cpu[True] / cpu[False] - 1:.1%} | {m:.1f} | {m / (cpu[True] - m):.1%} |")
    MemorizationMonitor.score = score  # type: ignore[method-assign]
    print(f"torch threads {torch.get_num_threads()}; CPU time of this process (under load from parallel jobs)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report", "audit", "cost", "replay"])
    p.add_argument("--data", choices=["digits", "patches"], default="digits")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--planted", dest="planted", action="store_true", default=True)
    g.add_argument("--clean", dest="planted", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copies", type=int, default=None, help="copies of each planted image (digits 30, patches 20)")
    p.add_argument("--n-dup", type=int, default=10)
    p.add_argument("--n-base", type=int, default=400)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--preset", default=None, help="run: train with this lidmem train preset (e.g. photo16)")
    p.add_argument("--save-every", type=int, default=0, help="run: save the EMA weights every N steps under <run>/ema/ (for replay)")
    p.add_argument("--every", type=int, default=None,
                   help="run/replay/cost: the monitor's interval (default lidmem.monitor.DEFAULT_EVERY; run: 0 = no monitor); report/audit: thin the logs to this")
    p.add_argument("--window", type=int, default=None, help="report: fall-test window in scored steps (default lidmem.monitor.DEFAULT_WINDOW; 0: level test only)")
    p.add_argument("--log", choices=["model", "replay"], default="model", help="report: the runs' live logs or their replays")
    p.add_argument("--probes", type=int, default=None, help="probe images (default lidmem.monitor.DEFAULT_PROBE_IMAGES)")
    p.add_argument("--repeats", type=int, default=1, help="cost: repetitions")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--sampling-steps", type=int, default=10)
    p.add_argument("--checkpoint-steps", type=int, nargs="*", default=[200, 400, 600, 1000])
    p.add_argument("--audit-samples", type=int, default=128)
    p.add_argument("--run", default=None, help="audit/replay: one run's folder name (audit default digits-planted-s0-x30; replay: all)")
    p.add_argument("--out", default="build/monitor")
    args = p.parse_args()
    if args.window is None:
        from lidmem.monitor import DEFAULT_WINDOW

        args.window = DEFAULT_WINDOW
    print(f"torch threads {torch.get_num_threads()}")
    {"run": run, "report": report, "audit": audit, "cost": cost, "replay": replay}[args.what](args)


if __name__ == "__main__":
    main()
