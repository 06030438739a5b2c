"""Example models of every kind ``lidmem.models.load_model`` reads, for docs/models.md.

Build the diffusers folders (tiny, random weights, built from configs; nothing is downloaded):

    OMP_NUM_THREADS=1 python scripts/byom_examples.py --out byom/

which writes ``byom/ddpm`` (DDPMPipeline, epsilon), ``byom/ddim-v`` (DDIMPipeline, v-prediction,
no model_index.json), ``byom/ldm`` (LDMPipeline: VQModel + latent UNet) and ``byom/sd`` (Stable
Diffusion layout). The entry points below are used as ``PYTHONPATH=scripts lidmem inspect
byom_examples:edm_denoiser`` and ``byom_examples:digits_generator``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lidmem.models import EDMDenoiser, GeneratorSpec

_P = torch.linalg.qr(torch.randn(64, 5, generator=torch.Generator().manual_seed(0)))[0]


class SubspaceDenoiser(torch.nn.Module):
    """Exact EDM denoiser D(x, sigma) of data x0 = P z, z ~ N(0, I_5) on a 5-dim subspace of R^64."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        proj = flat @ _P.to(x.dtype) @ _P.T.to(x.dtype)
        return (proj / (1 + sigma.reshape(-1, 1) ** 2)).reshape(x.shape)


def edm_denoiser() -> EDMDenoiser:
    """Entry point: an EDM / k-diffusion style denoiser with sigma in [0.002, 80]."""
    return EDMDenoiser(SubspaceDenoiser(), sigma_min=0.002, sigma_max=80.0, data_shape=(1, 8, 8))


def digits_generator() -> GeneratorSpec:
    """Entry point: the shipped digits VAE decoder as a user-supplied generator G(z), z ~ N(0, I_16)."""
    from lidmem.generators import load_generator
    from lidmem.experiments.digits import shipped_digits_checkpoints

    return GeneratorSpec(load_generator(shipped_digits_checkpoints()["generator"]), latent_dim=16, data_shape=(1, 8, 8))


def build(out: Path) -> None:
    """Write the tiny diffusers folders under ``out``."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, LDMPipeline, UNet2DModel, VQModel

    from lidmem.text2image.testing import tiny_components

    def unet(channels: int, size: int, seed: int) -> UNet2DModel:
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(16, 32),
                           layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"))

    DDPMPipeline(unet=unet(1, 8, 0), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(out / "ddpm")
    DDIMPipeline(unet=unet(3, 16, 1), scheduler=DDIMScheduler(prediction_type="v_prediction")).save_pretrained(out / "ddim-v")
    (out / "ddim-v" / "model_index.json").unlink()
    torch.manual_seed(2)
    vq = VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                 up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=2, num_vq_embeddings=32, norm_num_groups=8, sample_size=8)
    LDMPipeline(vqvae=vq, unet=unet(2, 4, 3), scheduler=DDIMScheduler(clip_sample=False)).save_pretrained(out / "ldm")
    for name, comp in tiny_components(latent=True).items():
        comp.save_pretrained(out / "sd" / name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("byom"))
    build(parser.parse_args().out)
