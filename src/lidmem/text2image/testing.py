"""Tiny, randomly initialised text-to-image components built offline from configs.

These mirror diffusers' own ``get_dummy_components`` test fixtures (UNet2DConditionModel with
blocks (32, 64) and cross-attention 32, CLIPTextModel with hidden size 32, DDIM, optional
AutoencoderKL [32, 64]) but the CLIP tokenizer is written locally (vocab.json + merges.txt in a
temporary folder, loaded with ``from_pretrained``) so nothing is downloaded. They are meant for
tests and examples: the weights are random, so numbers computed with them have no meaning beyond
checking plumbing and identities.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .toydata import bytes_to_unicode

__all__ = ["tiny_components", "tiny_tokenizer", "TINY_WORDS"]

#: Whole words of the tiny tokenizer (each gets BPE merges so it becomes one token).
TINY_WORDS: tuple[str, ...] = (
    "a", "photo", "of", "the", "cat", "dog", "red", "blue", "digit", "zero", "one", "two",
    "three", "seven", "painting", "house", "big", "small", "and", "on", "zqx",
)


def tiny_tokenizer(words: tuple[str, ...] = TINY_WORDS, *, model_max_length: int = 16) -> Any:
    """A CLIP BPE tokenizer with every byte as a token and whole-word merges for ``words``.

    Words outside ``words`` are split into several BPE pieces (e.g. ``"ca"``, ``"r</w>"``), which
    exercises the merging of pieces back into words.
    """
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab_list = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for w in words:
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merge = f"{a} {b}"
            if merge not in merges:
                merges.append(merge)
            if a + b not in vocab_list:
                vocab_list.append(a + b)
            pieces = [a + b] + pieces[2:]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps(vocab))
        Path(tmp, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=model_max_length)
    return tok


def tiny_components(*, seed: int = 0, latent: bool = True, sample_size: int = 8, model_max_length: int = 16) -> dict[str, Any]:
    """Random tiny components ``{"unet", "text_encoder", "tokenizer", "scheduler", "vae"}``.

    Parameters
    ----------
    seed : int, default=0
        Seed of the random weights.
    latent : bool, default=True
        With a VAE (AutoencoderKL [32, 64], 4 latent channels, images 3 x 2*sample_size
        squared); without one the UNet works on 3-channel pixels of side ``sample_size``.
    sample_size : int, default=8
        Side of the UNet's input (latents or pixels).
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(model_max_length=model_max_length)
    torch.manual_seed(seed)
    channels = 4 if latent else 3
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=model_max_length,
        )
    )
    vae = None
    if latent:
        torch.manual_seed(seed + 2)
        vae = AutoencoderKL(
            block_out_channels=(32, 64),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=8,
            sample_size=2 * sample_size,
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for m in (unet, text_encoder, vae):
        if m is not None:
            m.eval()
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler, "vae": vae}
