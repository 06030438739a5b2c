"""GPU suite: forward, FLIPD (both AD modes, with CFG), `lidmem score` throughput and peak memory
for a Stable Diffusion v1.5-size UNet and a CIFAR-10-size UNet, in one table (issue 14).

Networks (random weights; the cost does not depend on them; configurations written out below, so
nothing is downloaded):

- ``SD1.5 UNet``: ``UNet2DConditionModel`` with Stable Diffusion v1.5's configuration
  (860 M parameters), 4x64x64 latents, text embeddings ``(1, 77, 768)``;
- ``CIFAR UNet``: ``UNet2DModel`` with ``google/ddpm-cifar10-32``'s configuration, 3x32x32.

For each network x dtype (float32 / bfloat16 / float16: the weights are cast, inputs are cast at
the network's boundary) x ``torch.compile`` (off / on), one row:

- ``fwd ms``: one forward pass of the batch (CFG: not included);
- ``FLIPD fwd ms (x)`` / ``FLIPD rev ms (x)``: ``lidmem.estimators.flipd`` with one Hutchinson
  probe, ``ad="forward"`` / ``ad="reverse"``, and the ratio to ``fwd ms``;
- ``FLIPD CFG ms``: the same with classifier-free guidance (scale 7.5, both branches in the
  Jacobian, default ``ad``; SD only);
- ``score rows/s``: ``lidmem.scoring.score_dataset`` with ``metrics=["flipd_hutchinson"]`` on
  in-memory random rows (one shard, one worker);
- ``peak MiB``: ``torch.cuda.max_memory_allocated`` during the forward / the forward-mode FLIPD;
- ``A^FLIPD s``: the cost of one A^FLIPD prompt, ``n_gen`` generations x ``steps`` DDIM steps,
  each step one CFG forward plus one CFG FLIPD probe on the ``n_gen`` latents (from the measured
  times; SD only).

Every cell is guarded: an error prints ``err: <type>`` in its cell and the suite goes on; cells
that would start after ``--budget-s`` seconds print ``skipped``.

Usage::

    python benchmarks/gpu_suite.py                 # on a GPU, <= 5 minutes
    python benchmarks/gpu_suite.py --smoke         # tiny configurations on CPU, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

T0 = 0.01
GUIDANCE = 7.5

#: Stable Diffusion v1.5's UNet2DConditionModel configuration (runwayml/stable-diffusion-v1-5, unet/config.json).
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "center_input_sample": False,
    "mid_block_scale_factor": 1,
}

#: The same architecture shrunk for ``--smoke`` (CPU, seconds).
SMOKE_SD_CONFIG: dict[str, Any] = {
    **SD15_UNET_CONFIG,
    "sample_size": 8,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}

SMOKE_CIFAR_CONFIG_OVERRIDES: dict[str, Any] = {
    "sample_size": 8,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cifar_config() -> dict[str, Any]:
    """``google/ddpm-cifar10-32``'s configuration, as written out in ``benchmarks/speed_flipd.py``."""
    path = Path(__file__).with_name("speed_flipd.py")
    spec = importlib.util.spec_from_file_location("_lidmem_speed_flipd", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.CIFAR10_UNET_CONFIG)


class _Net(nn.Module):
    """``net(x, t)`` for a diffusers UNet: continuous ``t`` in [0, 1] -> timestep ``1000 t``;
    inputs cast to the UNet's dtype, the output back to ``x``'s; with ``cond`` (and
    ``guidance_scale``) the CFG combination of the ``[uncond, cond]`` batch."""

    def __init__(self, unet: nn.Module, cond: torch.Tensor | None = None, uncond: torch.Tensor | None = None, guidance_scale: float = 1.0) -> None:
        super().__init__()
        self.unet = unet
        self.cond, self.uncond, self.guidance_scale = cond, uncond, guidance_scale

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dt = next(self.unet.parameters()).dtype
        xi, ti = x.to(dt), 1000.0 * t.float()
        if self.cond is None:
            return self.unet(xi, ti).sample.to(x.dtype)
        n = x.shape[0]
        if self.uncond is None:
            return self.unet(xi, ti, encoder_hidden_states=self.cond.expand(n, -1, -1)).sample.to(x.dtype)
        emb = torch.cat([self.uncond.expand(n, -1, -1), self.cond.expand(n, -1, -1)])
        out = self.unet(torch.cat([xi, xi]), torch.cat([ti, ti]), encoder_hidden_states=emb).sample
        out_u, out_c = out.chunk(2)
        return (out_u + self.guidance_scale * (out_c - out_u)).to(x.dtype)


class _RandomRows:
    """In-memory random rows for ``score_dataset`` (a :class:`lidmem.scoring.sources.DataSource`)."""

    def __new__(cls, n: int, shape: Sequence[int], seed: int = 0) -> Any:
        from lidmem.scoring.sources import DataSource, Rows

        data = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)

        class RandomRows(DataSource):
            kind = "memory"

            def __len__(self) -> int:
                return n

            def read(self, start: int, stop: int) -> Rows:
                self._check_range(start, stop)
                return Rows(np.arange(start, stop, dtype=np.int64), [str(i) for i in range(start, stop)], data[start:stop], False)

            def describe(self) -> dict[str, Any]:
                return {"kind": "memory", "rows": n, "shape": list(shape), "seed": seed}

        return RandomRows()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    _sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def _peak_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def _cell(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # the suite reports and goes on  # noqa: BLE001
        return f"err: {type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''}"


def _fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "n/a"
    return format(v, spec) if isinstance(v, float) else str(v)


def run_suite(*, smoke: bool, device: torch.device, dtypes: Sequence[str], compile_modes: Sequence[bool], repeats: int, budget_s: float,
              n_gen: int = 4, steps: int = 50, score_rows: int | None = None) -> list[dict[str, Any]]:
    """Measure every (network, dtype, compile) cell; returns one dict per table row."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    from lidmem import ScoreModel, VPSDE
    from lidmem.estimators import flipd
    from lidmem.scoring import score_dataset

    start = time.perf_counter()
    cifar = {**cifar_config(), **(SMOKE_CIFAR_CONFIG_OVERRIDES if smoke else {})}
    sd = SMOKE_SD_CONFIG if smoke else SD15_UNET_CONFIG
    nets = [
        ("SD1.5 UNet" + (" (smoke)" if smoke else ""), "sd", sd, 2 if smoke else 8),
        ("CIFAR UNet" + (" (smoke)" if smoke else ""), "cifar", cifar, 4 if smoke else 128),
    ]
    rows = []
    for label, kind, config, B in nets:
        torch.manual_seed(0)
        base = (UNet2DConditionModel(**config) if kind == "sd" else UNet2DModel(**config)).eval().requires_grad_(False)
        shape = (config["in_channels"], config["sample_size"], config["sample_size"])
        g = torch.Generator().manual_seed(0)
        cond = uncond = None
        if kind == "sd":
            cond = torch.randn(1, 77, config["cross_attention_dim"], generator=g)
            uncond = torch.randn(1, 77, config["cross_attention_dim"], generator=g)
        for dname in dtypes:
            dt = DTYPES[dname]
            for compiled in compile_modes:
                row: dict[str, Any] = {"network": label, "dtype": dname, "compile": "on" if compiled else "off", "B": B}
                rows.append(row)
                if time.perf_counter() - start > budget_s:
                    row["skipped"] = True
                    continue
                unet = base.to(device=device, dtype=dt)
                if compiled:
                    unet = torch.compile(unet, backend="eager" if device.type == "cpu" else "inductor")
                c = None if cond is None else cond.to(device=device, dtype=dt)
                u = None if uncond is None else uncond.to(device=device, dtype=dt)
                model = ScoreModel(_Net(unet, c), VPSDE(), prediction="epsilon")
                x = torch.randn(B, *shape, generator=g).to(device)
                tvec = torch.full((B,), T0, device=device)

                def fwd() -> None:
                    with torch.no_grad():
                        model(x, tvec)

                def fl(ad: str, m: Any = model, xs: torch.Tensor = x) -> Any:
                    return flipd(m, xs, T0, trace="hutchinson", n_probes=1, ad=ad, batch_size=xs.shape[0], progress=False)

                row["fwd ms"] = _cell(lambda: _time_ms(fwd, device, repeats))
                for ad in ("forward", "reverse"):
                    row[f"{ad} ms"] = _cell(lambda ad=ad: _time_ms(lambda: fl(ad), device, repeats))
                if kind == "sd":
                    cfg_model = ScoreModel(_Net(unet, c, u, GUIDANCE), VPSDE(), prediction="epsilon")
                    xg = x[:n_gen]
                    tg = tvec[:n_gen]
                    row["cfg ms"] = _cell(lambda: _time_ms(lambda: fl("auto", cfg_model, xg), device, repeats))

                    def cfg_fwd() -> None:
                        with torch.no_grad():
                            cfg_model(xg, tg)

                    cfg_fwd_ms = _cell(lambda: _time_ms(cfg_fwd, device, repeats))
                    if isinstance(row["cfg ms"], float) and isinstance(cfg_fwd_ms, float):
                        row["A^FLIPD s"] = steps * (cfg_fwd_ms + row["cfg ms"]) / 1e3
                row["peak fwd"] = _cell(lambda: _peak_mib(fwd, device))
                row["peak flipd"] = _cell(lambda: _peak_mib(lambda: fl("forward"), device))

                def score() -> float:
                    n = score_rows or 4 * B
                    with tempfile.TemporaryDirectory() as tmp:
                        res = score_dataset(model, _RandomRows(n, shape), tmp, metrics=["flipd_hutchinson"], batch_size=B, shard_size=n,
                                            device=device, merge=False, progress=False, prefetch=False)
                    return float(res.rows_per_second)

                row["score rows/s"] = _cell(score)
        base.to("cpu")
    return rows


def format_table(rows: list[dict[str, Any]], *, n_gen: int, steps: int) -> str:
    cols = ["network", "dtype", "compile", "B", "fwd ms", "FLIPD fwd ms (x)", "FLIPD rev ms (x)", "FLIPD CFG ms", "score rows/s", "peak MiB fwd / FLIPD", f"A^FLIPD s ({n_gen}x{steps})"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        if r.get("skipped"):
            cells = [r["network"], r["dtype"], r["compile"], str(r["B"])] + ["skipped"] * (len(cols) - 4)
        else:
            f = r.get("fwd ms")

            def ratio(k: str) -> str:
                v = r.get(k)
                if isinstance(v, float) and isinstance(f, float) and f > 0:
                    return f"{v:.1f} ({v / f:.2f}x)"
                return _fmt(v)

            cells = [
                r["network"], r["dtype"], r["compile"], str(r["B"]), _fmt(f), ratio("forward ms"), ratio("reverse ms"),
                _fmt(r.get("cfg ms")), _fmt(r.get("score rows/s")), f"{_fmt(r.get('peak fwd'), '.0f')} / {_fmt(r.get('peak flipd'), '.0f')}",
                _fmt(r.get("A^FLIPD s"), ".2f"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny configurations on CPU (seconds): checks that the suite runs")
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    ap.add_argument("--dtypes", default=None, help="comma-separated subset of fp32,bf16,fp16 (default all; fp32 with --smoke)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per cell (default 5; 1 with --smoke)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="cells that would start after this many seconds are skipped")
    ap.add_argument("--n-gen", type=int, default=4, help="generations per A^FLIPD prompt")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps per A^FLIPD generation")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    dtypes = (args.dtypes or ("fp32" if args.smoke else "fp32,bf16,fp16")).split(",")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        ap.error(f"--dtypes: unknown {bad}; choose from {','.join(DTYPES)}")
    compile_modes = (False,) if args.no_compile else (False, True)
    repeats = args.repeats or (1 if args.smoke else 5)
    t = time.perf_counter()
    rows = run_suite(smoke=args.smoke, device=device, dtypes=dtypes, compile_modes=compile_modes, repeats=repeats, budget_s=args.budget_s, n_gen=args.n_gen, steps=args.steps,
                     score_rows=8 if args.smoke else None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = format_table(rows, n_gen=args.n_gen, steps=args.steps)
    text = (f"lidmem GPU suite on {name} ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {time.perf_counter() - t:.0f} s; "
            f"FLIPD: 1 Hutchinson probe, t0={T0}; CFG scale {GUIDANCE})\n{table}")
    print(text)
    return text


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
