"""Does ``lidmem train`` make models worth auditing on photographs? In-range share of the sample
grid, CPU cost and copies found, per data set and recipe; and why samples leave the data range.

Data sets (planted duplicates, :func:`lidmem.data.images.load_patches_with_duplicates`):

- ``patches16``: grey 16x16 photo tiles (the defaults: 400 tiles, 10 x 20 copies, 590 rows);
- ``rgb32``: RGB 32x32 tiles of the same two photos at full resolution
  (``size=32, channels=3, downsample=1``; 590 rows of shape (3, 32, 32)).

``train`` trains :func:`lidmem.workflows.train.train_image_model` (what ``lidmem train`` runs)
with a preset (``--preset``, default: the image side's defaults) and overrides
(``--steps``, ``--batch-size``, ``--lr``, ``--prediction``, ``--log-uniform-fraction``,
``--ema-decay``, ``--channels``), and every ``--eval-every`` steps samples a 64-image grid from the
EMA *and* the raw weights (probability-flow ODE, Heun, 50 steps, Tweedie-denoised: the grid of
``lidmem train``) and records the in-range share (every value within [-1.1, 1.1]:
:func:`lidmem.memorization.reliability.in_range_fraction`) and the share whose 4x4 block means
are in range (``pooled``: a model whose samples leave the range only through fine detail scores
high there, one with wrong brightness / coarse structure does not). At the end: the grid PNG, and
``--num-samples`` samples (Heun, 30 steps, as the audit) matched with
:func:`lidmem.memorization.copy_detection.find_copies`. CPU minutes are ``time.process_time``
of training alone (evaluations excluded), summed over resumed calls.

``diagnose CKPT`` samples one checkpoint with several samplers (steps, Euler vs Heun, ``t_end``,
final denoising, Euler-Maruyama) and shows where along the trajectory the Tweedie estimate
``E[x0 | x_t]`` leaves [-1, 1] (it cannot for an exact score: it is a mean of training images).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/train_presets.py train --dataset patches16 --preset photo16
    OMP_NUM_THREADS=1 python benchmarks/train_presets.py diagnose build/train_presets/patches16_photo16.safetensors
    python benchmarks/train_presets.py table          # the table of every run in --cache
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lidmem.data.images import DigitsData, load_patches_with_duplicates
from lidmem.diffusion.sampling import get_timesteps, integrate_ode, sample_euler_maruyama, sample_ode
from lidmem.diffusion.score import ScoreModel
from lidmem.memorization.reliability import in_range_fraction

DATASETS = {
    "patches16": dict(),
    "rgb32": dict(size=32, channels=3, downsample=1),
}


def load_dataset(name: str) -> DigitsData:
    """The planted-duplicates data set ``name`` (see the module docstring)."""
    return load_patches_with_duplicates(**DATASETS[name])


def pooled_in_range(x: torch.Tensor, block: int = 4) -> float:
    """Share of images whose ``block x block`` means all lie in [-1.1, 1.1]."""
    p = torch.nn.functional.avg_pool2d(x.double(), block)
    return float(in_range_fraction(p)["fraction"])


def grid_stats(model: Any, shape: tuple[int, ...], *, n: int = 64, steps: int = 50, method: str = "heun", t_end: float = 1e-3,
               denoise: bool = True, seed: int = 0, sde_sampler: bool = False) -> dict[str, Any]:
    """In-range share (pixels and 4x4 blocks) of ``n`` samples from one sampler."""
    with torch.no_grad():
        if sde_sampler:
            x = sample_euler_maruyama(model, (n, *shape), steps=steps, t_end=t_end, denoise=denoise, seed=seed, progress=False)
        else:
            x = sample_ode(model, (n, *shape), steps=steps, method=method, t_end=t_end, denoise=denoise, seed=seed, progress=False)
    r = in_range_fraction(x)
    return {"in_range": r["fraction"], "pooled": pooled_in_range(x), "min": r["sample_min"], "max": r["sample_max"], "x": x}


def run_path(cache: Path, dataset: str, tag: str) -> Path:
    return cache / f"{dataset}_{tag}.safetensors"


def train(args: argparse.Namespace) -> None:
    from lidmem.diffusion.sde import VPSDE
    from lidmem.memorization.copy_detection import find_copies
    from lidmem.workflows.train import check_sample_grid, train_image_model, train_settings

    data = load_dataset(args.dataset)
    shape = tuple(data.images.shape[1:])
    d = train_settings(shape[-1], args.preset)
    over = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "prediction", "log_uniform_fraction", "ema_decay") if getattr(args, k) is not None}
    if args.channels:
        over["block_out_channels"] = tuple(int(c) for c in args.channels.split(","))
    short = {"batch_size": "b", "lr": "lr", "prediction": "", "log_uniform_fraction": "luf", "ema_decay": "ema", "block_out_channels": "c"}
    tag = args.tag or (args.preset or "default") + "".join(
        f"_{short[k]}{'-'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in sorted(over.items()) if k != "steps")
    args.cache.mkdir(parents=True, exist_ok=True)
    ckpt = run_path(args.cache, args.dataset, tag)
    log_path = ckpt.with_suffix(".bench.json")
    log = json.loads(log_path.read_text()) if log_path.is_file() else {"train_cpu_s": 0.0, "evals": []}
    prediction = over.get("prediction", d.prediction)
    eval_cpu = [0.0]

    def callback(step: int, net: torch.nn.Module, ema: torch.nn.Module) -> str | None:
        if step % args.eval_every:
            return None
        c0 = time.process_time()
        row: dict[str, Any] = {"step": step}
        for name, module in (("ema", ema), ("raw", net)):
            g = grid_stats(ScoreModel(module, VPSDE(), prediction=prediction), shape)
            row[name] = g["in_range"]
            row[name + "_pooled"] = g["pooled"]
        net.train()
        eval_cpu[0] += time.process_time() - c0
        row["train_cpu_min"] = (log["train_cpu_s"] + time.process_time() - c_start - eval_cpu[0]) / 60
        log["evals"] = [e for e in log["evals"] if e["step"] != step] + [row]
        print(f"  step {step:>6}: in range EMA {row['ema']:.2f} (blocks {row['ema_pooled']:.2f}), raw {row['raw']:.2f} "
              f"(blocks {row['raw_pooled']:.2f}); train CPU {row['train_cpu_min']:.1f} min", flush=True)
        return None

    c_start = time.process_time()
    res = train_image_model(data.images, ckpt, preset=args.preset, checkpoint_every=args.eval_every, seed=args.seed, progress=False,
                            callback=callback, **over)
    log["train_cpu_s"] += time.process_time() - c_start - eval_cpu[0]
    log.update(dataset=args.dataset, preset=args.preset or "default", overrides={k: list(v) if isinstance(v, tuple) else v for k, v in over.items()},
               steps=int(res.steps), final_loss=float(res.losses[-100:].mean()), settings=res.settings)
    grid = check_sample_grid(res.model, shape, ckpt.with_suffix(".samples.png"), n=64, steps=50, seed=0)
    ref = args.cache / f"{args.dataset}_training_images.png"  # 64 distinct training tiles, to compare the grid with
    if not ref.is_file():
        from lidmem.workflows.train import write_image_grid

        write_image_grid(torch.from_numpy(data.images[:64]), ref)
    log["grid_in_range"] = grid["in_range"]["fraction"]
    xs = []
    for i, lo in enumerate(range(0, args.num_samples, 256)):  # as the audit: chunks of 256, seed = chunk index
        with torch.no_grad():
            xs.append(sample_ode(res.model, (min(256, args.num_samples - lo), *shape), steps=30, denoise=True, seed=i, progress=False))
    x = torch.cat(xs)
    m = find_copies(x.numpy(), data.images)
    log.update(audit_samples=int(len(x)), audit_in_range=in_range_fraction(x)["fraction"], copies=int((m.labels != "none").sum()),
               exact_copies=int((m.labels == "exact_copy").sum()))
    log_path.write_text(json.dumps(log, indent=1))
    print(f"{args.dataset} {tag}: {res.steps} steps, train CPU {log['train_cpu_s'] / 60:.1f} min, loss {log['final_loss']:.4f}, grid in range "
          f"{log['grid_in_range']:.2f}, {len(x)} samples in range {log['audit_in_range']:.2f}, copies {log['copies']} "
          f"({log['exact_copies']} exact); wrote {grid['png']}")


def table(args: argparse.Namespace) -> None:
    rows = []
    for p in sorted(args.cache.glob("*.bench.json")):
        r = json.loads(p.read_text())
        if "steps" not in r:
            continue
        rows.append(r)
    print(f"{'data':<10} {'preset':<9} {'overrides':<34} {'steps':>6} {'CPU-min':>8} {'grid in range':>14} {'300 in range':>13} {'copies (exact)':>15}")
    for r in rows:
        ov = ",".join(f"{k}={v}" for k, v in r["overrides"].items() if k != "steps") or "-"
        print(f"{r['dataset']:<10} {r['preset']:<9} {ov:<34} {r['steps']:>6} {r['train_cpu_s'] / 60:>8.1f} {r['grid_in_range']:>14.2f} "
              f"{r['audit_in_range']:>13.2f} {r['copies']:>8} ({r['exact_copies']})")
        if args.curves:
            print("    in range vs steps (EMA / raw): " + ", ".join(f"{e['step']}: {e['ema']:.2f}/{e['raw']:.2f}" for e in sorted(r["evals"], key=lambda e: e["step"])))


def diagnose(args: argparse.Namespace) -> None:
    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.diffusion.training import read_train_state

    model = load_score_model(args.checkpoint)
    meta_shape = None
    for name in DATASETS:
        if Path(args.checkpoint).name.startswith(name):
            data = load_dataset(name)
            meta_shape = tuple(data.images.shape[1:])
    if meta_shape is None:
        raise SystemExit("checkpoint name must start with a data set name (patches16_..., rgb32_...)")
    shape = meta_shape
    variants: list[tuple[str, dict[str, Any]]] = [
        ("Heun 50, t_end 1e-3, denoised (the grid)", {}),
        ("Heun 30 (the audit)", {"steps": 30}),
        ("Heun 100", {"steps": 100}),
        ("Heun 200", {"steps": 200}),
        ("Euler 100", {"steps": 100, "method": "euler"}),
        ("Euler 400", {"steps": 400, "method": "euler"}),
        ("Heun 50, t_end 1e-2", {"t_end": 1e-2}),
        ("Heun 50, t_end 5e-2", {"t_end": 5e-2}),
        ("Heun 50, not denoised", {"denoise": False}),
        ("Euler-Maruyama 500", {"steps": 500, "sde_sampler": True}),
    ]
    print(f"{args.checkpoint}: {args.n} samples per sampler")
    print(f"{'sampler':<44} {'in range':>9} {'blocks':>7} {'min':>7} {'max':>7} {'CPU s':>6}")
    for label, kw in variants:
        c0 = time.process_time()
        g = grid_stats(model, shape, n=args.n, **kw)
        print(f"{label:<44} {g['in_range']:>9.2f} {g['pooled']:>7.2f} {g['min']:>7.2f} {g['max']:>7.2f} {time.process_time() - c0:>6.0f}", flush=True)
    state = Path(str(args.checkpoint) + ".train_state.safetensors")
    if state.is_file():
        net = copy.deepcopy(model.net)
        net.load_state_dict(read_train_state(state, torch.device("cpu"))["net"])
        g = grid_stats(ScoreModel(net, model.sde, prediction=model.prediction), shape, n=args.n)
        print(f"{'raw (non-EMA) weights, Heun 50':<44} {g['in_range']:>9.2f} {g['pooled']:>7.2f} {g['min']:>7.2f} {g['max']:>7.2f}")
    # where along the trajectory does E[x0 | x_t] leave [-1, 1]?
    print("\nTweedie estimate E[x0 | x_t] along the Heun-50 trajectory (an exact score keeps it in [-1, 1]):")
    x = model.sde.prior_sampling((args.n, *shape), generator=torch.Generator().manual_seed(0))
    ts = get_timesteps(50, t_end=1e-3, sde=model.sde)
    marks: dict[float, tuple[float, float, float]] = {}

    def cb(info: dict[str, Any]) -> None:
        t = info["t"]
        xt, s = prev[0], info["score"]
        tt = torch.tensor(t)
        x0 = (xt + model.sde.sigma(tt) ** 2 * s) / model.sde.psi(tt)
        r = in_range_fraction(x0)
        marks[t] = (r["fraction"], pooled_in_range(x0), float(x0.abs().amax(dim=(1, 2, 3)).median()))
        prev[0] = info["x"]

    prev = [x]
    with torch.no_grad():
        integrate_ode(model, x, ts, callback=cb, progress=False)
    for t in sorted(marks, reverse=True)[:: max(1, len(marks) // 12)]:
        f, pf, med = marks[t]
        print(f"  t = {t:.4f} (sigma {float(model.sde.sigma(torch.tensor(t))):.3f}): in range {f:.2f}, blocks {pf:.2f}, median max|x0| {med:.2f}")
    # the network on training images: denoise noisy training images
    print("\nTweedie denoiser on noisy training images (x0 in the data; the estimate should stay in range):")
    x0 = torch.from_numpy(data.images[:: max(1, len(data.images) // 128)][:128])
    g = torch.Generator().manual_seed(1)
    for t in (0.001, 0.01, 0.05, 0.2, 0.5):
        tt = torch.full((len(x0),), t)
        xt = model.sde.perturb(x0, tt, torch.randn(x0.shape, generator=g))
        with torch.no_grad():
            est = model.denoise(xt, tt)
        r = in_range_fraction(est)
        print(f"  t = {t:<5} in range {r['fraction']:.2f}, blocks {pooled_in_range(est):.2f}, rmse {float((est - x0).pow(2).mean().sqrt()):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("build/train_presets"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", choices=list(DATASETS), required=True)
    t.add_argument("--preset", default=None)
    t.add_argument("--tag", default=None, help="Run name (default from preset and overrides).")
    for k, typ in (("steps", int), ("batch-size", int), ("lr", float), ("prediction", str), ("log-uniform-fraction", float), ("ema-decay", float)):
        t.add_argument(f"--{k}", type=typ, default=None)
    t.add_argument("--channels", default=None)
    t.add_argument("--eval-every", type=int, default=500)
    t.add_argument("--num-samples", type=int, default=300)
    t.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("diagnose")
    g.add_argument("checkpoint", type=Path)
    g.add_argument("--n", type=int, default=64)
    tb = sub.add_parser("table")
    tb.add_argument("--curves", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    {"train": train, "diagnose": diagnose, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
