"""Reproduce the shipped checkpoint ``src/lidmem/weights/vonmises.safetensors``.

Runs exactly what ``lidmem demo vonmises --retrain`` runs
(:func:`lidmem.experiments.vonmises.train_vonmises_model` with its defaults: data seed 42,
training seed 0, VP-SDE, epsilon prediction) and prints the CPU time. Deterministic on CPU.

Usage::

    OMP_NUM_THREADS=1 python scripts/train_vonmises.py [--out PATH] [--steps N]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from lidmem.experiments.vonmises import TRAIN_STEPS, train_vonmises_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "lidmem" / "weights" / "vonmises.safetensors")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--work", type=Path, default=Path("build") / "vonmises",
                        help="folder for the resumable training checkpoint (Ctrl-C and rerun to continue)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --work holds a resumable state")
    args = parser.parse_args()
    work_ckpt = args.work / "vonmises.safetensors"
    cpu, wall = time.process_time(), time.perf_counter()
    result = train_vonmises_model(steps=args.steps, checkpoint=work_ckpt, resume=not args.no_resume)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work_ckpt, args.out)  # only the EMA weights ship, not the optimizer state
    print(f"trained {result.steps} steps (resumed from {result.resumed_from}); final loss {result.losses[-500:].mean():.4f}")
    print(f"CPU time {cpu:.1f} s, wall {wall:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
