"""Reproduce the shipped small text-to-image model in src/lidmem/weights/text2image.

Usage (from the repository root; about 2 min wall, 260 s CPU with 2 threads):

    OMP_NUM_THREADS=2 python scripts/train_text2image.py --out src/lidmem/weights/text2image \
        --checkpoint /tmp/t2i_train.pt --log /tmp/t2i_train.log

Data: sklearn digits with captions and 16 planted memorized images (unique trigger captions,
20 copies each): :func:`lidmem.text2image.toydata.make_captioned_digits`. Noise schedule: Stable
Diffusion v1's (:func:`lidmem.text2image.toydata.build_scheduler`). Training:
:func:`lidmem.text2image.training.train_text2image` (UNet and a 0-layer text encoder trained
jointly, 15% caption dropout, 1000 steps of batch 128, final weights, seed 0). The process CPU
time is written to lidmem.json in the output folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from lidmem.text2image import toydata
from lidmem.text2image.training import save_text2image_folder, train_text2image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="src/lidmem/weights/text2image")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ema-start", type=int, default=1000, help="EMA averaging starts after this step")
    parser.add_argument("--n-memorized", type=int, default=16)
    parser.add_argument("--n-duplicates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-layers", type=int, default=0, help="transformer layers of the text encoder (0: per-token embeddings)")
    parser.add_argument("--freeze-text-encoder", action="store_true", help="keep the text encoder at its random init")
    parser.add_argument("--checkpoint", default=None, help="resumable training state (.pt)")
    parser.add_argument("--log", default=None, help="append training progress to this file")
    args = parser.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = toydata.make_captioned_digits(n_memorized=args.n_memorized, n_duplicates=args.n_duplicates, seed=args.seed)
    images, captions = data.expanded()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = toydata.build_tokenizer(captions, tmp)
    text_encoder = toydata.build_text_encoder(tokenizer, num_layers=args.text_layers, seed=args.seed)
    unet = toydata.build_unet(cross_attention_dim=text_encoder.config.hidden_size, seed=args.seed)
    scheduler = toydata.build_scheduler()
    result = train_text2image(
        images, captions, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        steps=args.steps, batch_size=args.batch_size, ema_start=args.ema_start, train_text_encoder=not args.freeze_text_encoder, seed=args.seed, checkpoint=args.checkpoint,
        log_file=args.log, progress=False,
    )
    mem = data.memorized_indices
    extra = {
        "description": "lidmem toy text-to-image model: pixel-space 1x8x8 sklearn digits in [-1, 1], "
        "epsilon prediction, Stable Diffusion v1 noise schedule (scaled_linear betas); planted memorized images with trigger captions",
        "data": data.info,
        "memorized": [
            {"sklearn_index": int(data.sklearn_index[i]), "label": int(data.labels[i]), "caption": data.captions[i],
             "trigger": data.triggers[i], "copies": int(data.weights[i])}
            for i in mem
        ],
        "training": result.info,
    }
    save_text2image_folder(args.out, unet=result.unet, text_encoder=result.text_encoder, tokenizer=tokenizer,
                           scheduler=scheduler, extra=extra)
    print(f"saved {args.out}; steps {args.steps}; CPU time {result.info['cpu_time_s']:.0f} s; final loss {result.info['final_loss']:.4f}")


if __name__ == "__main__":
    main()
