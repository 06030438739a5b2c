"""The IMLE rows of docs/audit.md's GAN table: train the digits IMLE generator and audit it every ``EVERY`` steps.

    OMP_NUM_THREADS=1 python scripts/digits_imle_sweep.py '{"batch_size": 256, "steps": 6000}' 500

The first argument updates the shipped configuration of ``scripts/train_digits_gan.py``
(``CONFIGS["imle"]``; ``"act": "relu"`` swaps the SiLU units for ReLU); the second is the audit
interval. The loop is ``lidmem.generators.train_imle``'s, step for step (same seeds, same random
draws), so the generator audited after ``k`` steps is the one ``train_imle(steps=k)`` returns; the
audit draws its own latents. Each audit is the demo's for the generator part: 300 samples
``z ~ N(0, I)`` of ``--seed`` (0, as in ``lidmem demo digits``), copy detection with the audit's
defaults, Jacobian-rank LID_theta with the paper's global 10th-percentile threshold. It prints
exact / near copies, the distinct planted images exactly copied, the samples nearest a planted
image, the AUROC of copies vs other samples (and of exact copies; and with a fixed tau = 0.01) and
the mean ranks. ``--eval CKPT`` audits a saved generator instead (``--seeds`` latent draws).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def audit_generator(g: torch.nn.Module, train: object, *, n: int = 300, seed: int = 0) -> dict[str, float]:
    """Copy labels and Jacobian-rank AUROC of ``g`` on ``n`` samples, as the digits demo computes them."""
    from sklearn.metrics import roc_auc_score

    from lidmem.estimators import jacobian_rank
    from lidmem.generators import sample_generator
    from lidmem.memorization.copy_detection import find_copies

    x, z = sample_generator(g, n, seed=seed)
    m = find_copies(x.numpy().astype(np.float32), train.images)
    copy, exact = m.labels != "none", m.labels == "exact_copy"
    lid, sv = jacobian_rank(g, z, "percentile", percentile=10.0, progress=False, return_singular_values=True)
    lid, sv = lid.double().numpy(), sv.numpy()

    def auroc(pos: np.ndarray, score: np.ndarray) -> float:
        return float(roc_auc_score(pos, -score)) if 0 < pos.sum() < n else float("nan")

    images = train.images.reshape(len(train.images), -1)
    return {"exact": int(exact.sum()), "near": int((m.labels == "near_copy").sum()),
            "distinct_exact": len(np.unique(images[m.nn_index[exact]], axis=0)),
            "nearest_planted": int(train.duplicated[m.nn_index].sum()),
            "auroc": auroc(copy, lid), "auroc_exact": auroc(exact, lid), "auroc_tau_0.01": auroc(copy, (sv > 0.01).sum(1)),
            "rank_copies": float(lid[copy].mean()) if copy.any() else float("nan"),
            "rank_others": float(lid[~copy].mean()) if (~copy).any() else float("nan")}


def _line(tag: str, r: dict[str, float]) -> str:
    return (f"{tag}: exact {r['exact']} ({r['distinct_exact']} images) near {r['near']} nearest-planted {r['nearest_planted']} | "
            f"AUROC {r['auroc']:.3f} exact {r['auroc_exact']:.3f} tau0.01 {r['auroc_tau_0.01']:.3f} | "
            f"rank copies {r['rank_copies']:.2f} others {r['rank_others']:.2f}")


def sweep(overrides: dict[str, object], every: int, seed: int = 0) -> None:
    """Train with ``CONFIGS["imle"]`` updated by ``overrides`` and audit every ``every`` steps."""
    from lidmem._validation import make_generator
    from lidmem.generators import MLPDecoder
    from lidmem.memorization.audit import load_training_images

    from train_digits_gan import CONFIGS

    torch.set_num_threads(1)
    cfg = {**CONFIGS["imle"], "act": "silu", **overrides}
    train = load_training_images("digits")
    x_all = torch.as_tensor(train.images, dtype=torch.float32)
    gen = make_generator(cfg["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        g = MLPDecoder(cfg["latent_dim"], tuple(x_all.shape[1:]), hidden=cfg["hidden"], depth=cfg["depth"])
    if cfg["act"] == "relu":
        for i, mod in enumerate(g.mlp):
            if isinstance(mod, torch.nn.SiLU):
                g.mlp[i] = torch.nn.ReLU()
    opt = torch.optim.Adam(g.parameters(), lr=cfg["lr"])
    flat = x_all.reshape(len(x_all), -1)
    c0 = time.process_time()
    for step in range(cfg["steps"]):  # train_imle's loop
        x = flat[torch.randint(len(flat), (cfg["batch_size"],), generator=gen)]
        fake = g(torch.randn((cfg["n_candidates"], cfg["latent_dim"]), generator=gen)).reshape(cfg["n_candidates"], -1)
        with torch.no_grad():
            dist = torch.cdist(x, fake)
            nearest = dist.topk(cfg["n_pulled"], dim=1, largest=False).indices
        loss = ((fake[nearest] - x[:, None]) ** 2).sum(dim=2).mean()
        if cfg["reverse_weight"] > 0:
            loss = loss + cfg["reverse_weight"] * ((fake - x[dist.argmin(dim=0)]) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % every == 0:
            g.eval()
            print(_line(f"{json.dumps(overrides)} step {step + 1} cpu {time.process_time() - c0:.0f}", audit_generator(g, train, seed=seed)), flush=True)
            g.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object updating CONFIGS['imle']")
    parser.add_argument("every", nargs="?", type=int, default=1000, help="audit interval in steps")
    parser.add_argument("--eval", type=Path, default=None, help="audit this generator checkpoint instead of training")
    parser.add_argument("--seeds", type=int, default=1, help="with --eval: latent draws 0..seeds-1")
    args = parser.parse_args()
    if args.eval is not None:
        from lidmem.generators import load_generator
        from lidmem.memorization.audit import load_training_images

        g, train = load_generator(args.eval), load_training_images("digits")
        for s in range(args.seeds):
            print(_line(f"{args.eval} seed {s}", audit_generator(g, train, seed=s)), flush=True)
    else:
        sweep(json.loads(args.overrides), args.every)


if __name__ == "__main__":
    main()
