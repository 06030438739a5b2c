"""Train the planted-watermark score model used by ``benchmarks/watermark_maps.py``.

    OMP_NUM_THREADS=1 python scripts/train_watermark.py --out .cache/watermark

Data: :func:`lidmem.data.watermark.load_digits_with_watermark` (defaults: the 1,797 digits 8x8 in
[-1, 1] + per-pixel jitter 0.15; a 3x3 checkerboard at the top-right corner of 30% of them;
``--position ROW COL`` and ``--size`` move and resize the patch).
Model: ``MLPScoreNet(64, hidden=512, depth=4)``, VP-SDE, epsilon prediction,
``lidmem.diffusion.training.train_score_model`` (seeded). Two files are written:

- ``watermark_mlp.safetensors``: the trained model (``--steps``, default 10,000);
- ``watermark_mlp_early.safetensors``: the same run after ``--early-steps`` (default 500), an
  underfitted baseline for the score-difference map of Kim & Lee (ICML 2026, their
  ``Delta s_theta~``: a less-trained checkpoint of the same model).

The weights are not shipped: the benchmark trains them into a cache folder when missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lidmem.data.watermark import load_digits_with_watermark
from lidmem.diffusion.checkpoint import save_checkpoint
from lidmem.diffusion.mlp import MLPScoreNet
from lidmem.diffusion.sde import VPSDE
from lidmem.diffusion.training import train_score_model

STEPS = 10_000
EARLY_STEPS = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/watermark"))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--early-steps", type=int, default=EARLY_STEPS)
    ap.add_argument("--position", type=int, nargs=2, default=(0, 5), metavar=("ROW", "COL"), help="top-left pixel of the patch")
    ap.add_argument("--size", type=int, default=3, help="side of the checkerboard patch in pixels")
    args = ap.parse_args()
    if not 0 < args.early_steps < args.steps:
        ap.error(f"--early-steps must lie in (0, --steps={args.steps})")
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_digits_with_watermark(position=tuple(args.position), size=args.size)
    torch.manual_seed(0)
    net = MLPScoreNet(64, hidden=512, depth=4)
    sde = VPSDE()
    state = args.out / "watermark_mlp.train.safetensors"
    c0, w0 = time.process_time(), time.perf_counter()
    for name, steps in (("watermark_mlp_early", args.early_steps), ("watermark_mlp", args.steps)):
        # the second call resumes the first run from its train-state sidecar
        # flat (n, 64) points: the jittered digits leave [-1, 1] by design (jitter 0.15), which the
        # image-range check of train_score_model refuses for (n, c, h, w) images; the MLP flattens anyway
        res = train_score_model(net, data.images.reshape(len(data.images), -1), sde, prediction="epsilon", steps=steps, batch_size=128, lr=1e-3,
                                ema_decay=0.999, seed=0, checkpoint=state, checkpoint_every=1000, progress=False)
        extra = {"data": data.recipe, "data_range": [-1.0, 1.0], "script": "scripts/train_watermark.py", "steps": steps,
                 "cpu_time_s": round(time.process_time() - c0, 1), "wall_time_s": round(time.perf_counter() - w0, 1),
                 "final_loss": float(res.losses[-100:].mean())}
        save_checkpoint(args.out / f"{name}.safetensors", res.model.net, kind="score_model", sde=sde, prediction="epsilon",
                        data_shape=(1, 8, 8), extra=extra)
        print(json.dumps({"model": name, **{k: extra[k] for k in ("steps", "cpu_time_s", "wall_time_s", "final_loss")}}))


if __name__ == "__main__":
    main()
