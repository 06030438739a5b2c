"""Reproduce the shipped digits checkpoints (planted-duplicates memorization audit).

    OMP_NUM_THREADS=1 python scripts/train_digits.py --models unet generator --out src/lidmem/weights

Data: ``lidmem.data.images.load_digits_with_duplicates(n_duplicated=30, n_copies=30, seed=0)``
(the 1,797 scikit-learn digits + 29 extra copies of each of 30 images; 2,667 rows in [-1, 1]).

- ``digits_unet.safetensors``: ``UNetScoreNet(8, block_out_channels=(32, 64))`` (no attention),
  VP-SDE, epsilon prediction, trained with ``lidmem.diffusion.training.train_score_model``.
- ``digits_generator.safetensors``: a VAE decoder ``z (16) -> 1x8x8`` trained with
  ``lidmem.generators.train_vae`` (kind "generator", for the Jacobian-rank LID).

Everything is seeded; the CPU time of each model is printed and stored in the checkpoint's
``extra["cpu_time_s"]``. Measured for the shipped files (OMP_NUM_THREADS=1, a shared 2-core
machine): UNet 4,000 steps, 390 s CPU (1,764 s wall under heavy load), final loss 0.203;
VAE decoder 4,000 steps, 15 s CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lidmem.data.images import load_digits_with_duplicates

UNET_STEPS = 4000
GEN_STEPS = 4000


def train_unet(out: Path, steps: int, work_dir: Path) -> None:
    from lidmem.diffusion.checkpoint import save_checkpoint
    from lidmem.diffusion.sde import VPSDE
    from lidmem.diffusion.training import train_score_model
    from lidmem.diffusion.unet import UNetScoreNet

    data = load_digits_with_duplicates()
    torch.manual_seed(0)
    net = UNetScoreNet(8, in_channels=1, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
    sde = VPSDE()
    extra = {"data": data.recipe, "data_range": [-1.0, 1.0], "script": "scripts/train_digits.py", "steps": steps}
    c0, w0 = time.process_time(), time.perf_counter()
    tmp = work_dir / "digits_unet.train.safetensors"  # resumable state stays out of the package
    res = train_score_model(
        net, data.images, sde, prediction="epsilon", steps=steps, batch_size=128, lr=1e-3, ema_decay=0.999,
        seed=0, checkpoint=tmp, checkpoint_every=500, extra=extra, progress=False,
    )
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    extra.update(cpu_time_s=round(cpu, 1), wall_time_s=round(wall, 1), final_loss=float(res.losses[-100:].mean()))
    save_checkpoint(out / "digits_unet.safetensors", res.model.net, kind="score_model", sde=sde, prediction="epsilon",
                    data_shape=(1, 8, 8), extra=extra)
    print(f"unet: {steps} steps, cpu {cpu:.0f} s, wall {wall:.0f} s, final loss {extra['final_loss']:.4f}")


def train_generator(out: Path, steps: int) -> None:
    from lidmem.generators import train_vae

    data = load_digits_with_duplicates()
    c0, w0 = time.process_time(), time.perf_counter()
    res = train_vae(data.images, latent_dim=16, hidden=256, steps=steps, batch_size=128, lr=1e-3, beta=0.5, seed=0)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    extra = {"data": data.recipe, "data_range": [-1.0, 1.0], "script": "scripts/train_digits.py", "steps": steps,
             "cpu_time_s": round(cpu, 1), "wall_time_s": round(wall, 1), "final_loss": float(res.losses[-100:].mean())}
    res.save(out / "digits_generator.safetensors", extra=extra)
    print(f"generator: {steps} steps, cpu {cpu:.0f} s, wall {wall:.0f} s, final loss {extra['final_loss']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["unet", "generator"], default=["unet", "generator"])
    parser.add_argument("--out", type=Path, default=Path("src/lidmem/weights"))
    parser.add_argument("--work-dir", type=Path, default=Path("build/train_digits"), help="resumable training state")
    parser.add_argument("--unet-steps", type=int, default=UNET_STEPS)
    parser.add_argument("--generator-steps", type=int, default=GEN_STEPS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if "unet" in args.models:
        train_unet(args.out, args.unet_steps, args.work_dir)
    if "generator" in args.models:
        train_generator(args.out, args.generator_steps)


if __name__ == "__main__":
    main()
