"""Reproduce the shipped digits GAN (``src/lidmem/weights/digits_gan.safetensors``).

    OMP_NUM_THREADS=1 python scripts/train_digits_gan.py --out src/lidmem/weights

Data: ``lidmem.data.images.load_digits_with_duplicates()`` (the 1,797 scikit-learn digits + 29
extra copies of each of 30 images; 2,667 rows in [-1, 1]), the training set of the digits demo.

Model: an MLP GAN (``lidmem.generators.train_gan``): generator ``MLPDecoder`` ``z (LATENT_DIM)
-> 1x8x8`` (tanh), MLP discriminator, non-saturating loss, Adam. The planted duplicates hold a
third of the training mass on 30 points; the generator collapses regions of its latent space onto
them, so its samples reproduce planted images and its Jacobian is nearly zero there (the GAN row
of the digits demo, Jacobian-rank LID_theta).

Everything is seeded; with ``OMP_NUM_THREADS=1`` a rerun on the same machine and torch version
gives the same weights bit for bit (``tests/test_digits_gan.py``). The CPU and wall time are
printed and stored in the checkpoint's ``extra``. Measured for the shipped file: see
``CPU_TIME_NOTE``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lidmem.data.images import load_digits_with_duplicates

#: The shipped configuration (``lidmem.generators.train_gan`` keyword arguments).
CONFIG = {"latent_dim": 8, "hidden": 256, "depth": 2, "disc_hidden": 256, "disc_depth": 2, "steps": 20000,
          "batch_size": 128, "lr": 2e-4, "seed": 0}
CPU_TIME_NOTE = "TBD"


def train(out: Path, **overrides: int | float) -> Path:
    """Train with :data:`CONFIG` (updated by ``overrides``) and write ``out/digits_gan.safetensors``."""
    from lidmem.generators import train_gan

    torch.set_num_threads(1)
    cfg = {**CONFIG, **overrides}
    data = load_digits_with_duplicates()
    c0, w0 = time.process_time(), time.perf_counter()
    res = train_gan(data.images, progress=False, **cfg)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    tail = res.losses[-500:].mean(axis=0)
    extra = {"data": data.recipe, "data_range": [-1.0, 1.0], "script": "scripts/train_digits_gan.py",
             "cpu_time_s": round(cpu, 1), "wall_time_s": round(wall, 1),
             "final_loss_d": float(tail[0]), "final_loss_g": float(tail[1])}
    path = res.save(Path(out) / "digits_gan.safetensors", extra=extra)
    print(f"GAN: {cfg['steps']} steps, cpu {cpu:.0f} s, wall {wall:.0f} s, final losses D {tail[0]:.3f} G {tail[1]:.3f} -> {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("src/lidmem/weights"))
    parser.add_argument("--steps", type=int, default=CONFIG["steps"], help="training steps (shorter runs for tests)")
    args = parser.parse_args()
    train(args.out, steps=args.steps)


if __name__ == "__main__":
    main()
