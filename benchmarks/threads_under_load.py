"""Wall time of representative lidmem workloads at 1, 2, ... torch threads, optionally while
other processes keep the CPU busy (the condition that makes torch's default thread count slow).

Workloads: FLIPD (exact trace and 1 Hutchinson probe) on the shipped digits UNet, and a batch of
UNet forward passes. ``--busy N`` starts N single-threaded busy-loop processes for the duration
of the measurement (the load of one other job on a 2-core machine is ``--busy 1``). Thread counts
are alternated within one process (``torch.set_num_threads``), each configuration timed
``--repeats`` times, median reported.

Usage::

    python benchmarks/threads_under_load.py [--threads 1 2] [--busy 1] [--rows 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch


def _spin(stop) -> None:  # pragma: no cover - helper process
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--busy", type=int, default=0, help="busy-loop processes to start (0: measure under whatever load there is)")
    p.add_argument("--rows", type=int, default=256, help="FLIPD rows (Hutchinson) per measurement")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from lidmem.data.audit_inputs import load_training_images
    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.estimators import flipd
    from lidmem.experiments.digits import shipped_digits_checkpoints

    model = load_score_model(shipped_digits_checkpoints()["unet"])
    x = torch.as_tensor(load_training_images("digits").images[: args.rows], dtype=torch.float32)
    shape = x.shape
    t = torch.full((shape[0],), 0.1)

    def fwd() -> None:
        with torch.no_grad():
            for _ in range(4):
                model(x, t)

    work = {
        f"FLIPD hutchinson, {shape[0]} rows": lambda: flipd(model, x, t0=0.1, trace="hutchinson", n_probes=1, progress=False),
        f"FLIPD exact, {max(shape[0] // 16, 1)} rows": lambda: flipd(model, x[: max(shape[0] // 16, 1)], t0=0.1, trace="exact", progress=False),
        f"4 UNet forwards, batch {shape[0]}": fwd,
    }
    stop = mp.Event()
    procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for pr in procs:
        pr.start()
    try:
        times: dict[tuple[str, int], list[float]] = {}
        for name, fn in work.items():
            fn()  # warm-up
            for _ in range(args.repeats):
                for n in args.threads:
                    torch.set_num_threads(n)
                    t_start = time.perf_counter()
                    fn()
                    times.setdefault((name, n), []).append(time.perf_counter() - t_start)
    finally:
        stop.set()
        for pr in procs:
            pr.join()
    print(f"busy processes: {args.busy}; CPUs: {mp.cpu_count()}; median of {args.repeats} (s)")
    print("| workload | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in args.threads) + " |")
    print("|---|" + "---|" * len(args.threads))
    for name in work:
        print(f"| {name} | " + " | ".join(f"{statistics.median(times[(name, n)]):.2f}" for n in args.threads) + " |")


if __name__ == "__main__":
    main()
