"""Train the digits generators of the GAN row; reproduces ``src/lidmem/weights/digits_imle.safetensors``.

    OMP_NUM_THREADS=1 python scripts/train_digits_gan.py --out src/lidmem/weights            # shipped IMLE generator
    OMP_NUM_THREADS=1 python scripts/train_digits_gan.py --model gan --out build/digits_gan  # the MLP GAN (not shipped)

Data: ``lidmem.data.images.load_digits_with_duplicates()`` (the 1,797 scikit-learn digits + 29
extra copies of each of 30 images; 2,667 rows in [-1, 1]), the training set of the digits demo.

- ``--model imle`` (shipped, ``digits_imle.safetensors``): ``MLPDecoder`` ``z (8) -> 1x8x8``
  trained by IMLE with a reverse term (``lidmem.generators.train_imle``, ``reverse_weight=1``:
  each training image pulls its nearest generated sample and each sample is pulled to its nearest
  image of the minibatch, the Chamfer distance: a GAN whose discriminator is the
  nearest-neighbour distance), minibatches of 256 images, 3,000 steps. A planted image, 30 times
  in the data, is in 94 % of the minibatches of 256 (2.9 times on average; 52 % and 0.72 times
  for minibatches of 64), so the samples around it are pulled onto it at almost every step: the
  generator reproduces it there and its Jacobian shrinks (the digits demo's generator report:
  Jacobian-rank LID_theta separates copies from other samples with AUROC 0.916; docs/audit.md,
  "The GAN row", lists the configurations measured and how the AUROC moves with the steps).
- ``--model gan``: the same generator trained as an MLP GAN (``lidmem.generators.train_gan``). It
  reproduces no planted image (docs/audit.md lists the configurations measured), so it is not
  shipped.

Everything is seeded; with ``OMP_NUM_THREADS=1`` a rerun on the same machine and torch version
gives the same weights bit for bit (``tests/test_digits_gan.py``). CPU and wall time are printed
and stored in the checkpoint's ``extra``. Measured for the shipped file: 3,000 steps, 11 s CPU
(54 s wall on a 2-core machine loaded by about 8 other jobs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lidmem.data.images import load_digits_with_duplicates

#: The configurations (keyword arguments of ``lidmem.generators.train_imle`` / ``train_gan``).
CONFIGS: dict[str, dict[str, int | float]] = {
    "imle": {"latent_dim": 8, "hidden": 256, "depth": 2, "steps": 3000, "batch_size": 256, "n_candidates": 256,
             "n_pulled": 1, "reverse_weight": 1.0, "lr": 1e-3, "seed": 0},
    "gan": {"latent_dim": 8, "hidden": 256, "depth": 2, "disc_hidden": 256, "disc_depth": 2, "steps": 20000,
            "batch_size": 128, "lr": 2e-4, "seed": 0},
}
FILES = {"imle": "digits_imle.safetensors", "gan": "digits_gan.safetensors"}


def train(out: Path, model: str = "imle", **overrides: int | float) -> Path:
    """Train ``model`` with its :data:`CONFIGS` entry (updated by ``overrides``) and write ``out/FILES[model]``."""
    from lidmem.generators import train_gan, train_imle

    torch.set_num_threads(1)
    cfg = {**CONFIGS[model], **overrides}
    data = load_digits_with_duplicates()
    c0, w0 = time.process_time(), time.perf_counter()
    res = (train_imle if model == "imle" else train_gan)(data.images, progress=False, **cfg)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    tail = res.losses[-500:].mean(axis=0)
    extra = {"data": data.recipe, "data_range": [-1.0, 1.0], "script": "scripts/train_digits_gan.py",
             "cpu_time_s": round(cpu, 1), "wall_time_s": round(wall, 1), "final_losses": [float(v) for v in tail]}
    path = res.save(Path(out) / FILES[model], extra=extra)
    print(f"{model}: {cfg['steps']} steps, cpu {cpu:.0f} s, wall {wall:.0f} s, final losses {tail.round(4).tolist()} -> {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(CONFIGS), default="imle")
    parser.add_argument("--out", type=Path, default=Path("src/lidmem/weights"))
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the model's configuration)")
    args = parser.parse_args()
    train(args.out, args.model, **({} if args.steps is None else {"steps": args.steps}))


if __name__ == "__main__":
    main()
