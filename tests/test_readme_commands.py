"""Every command line of README.md's ```bash blocks runs and exits 0.

README.md is read at test time, so commands added later are covered without editing this file.
Each line is split with shell rules (comments dropped); then

- lines that need an install, a GPU, several processes or the network are skipped
  (``SKIP_IF``, with the reason in the test id);
- the README's placeholders (``model.safetensors``, ``train_pngs/``, ``path/to/sd``, ...) are
  replaced by small real inputs built here (the ``inputs`` fixture); lines run with bash, in README
  order, in one temporary folder (so ``out/...`` written by one line is read by a later one), with
  ``lidmem`` and ``python`` on PATH running the interpreter under test;
- commands get options that make them small (``SMALL``, appended; typer keeps the last value of an
  option given twice, so they override the README's; ``SMALL_VALUES`` rewrites sizes in place).

A new README command with a new placeholder fails here until the placeholder is added to
the ``inputs`` fixture (that is the point: every README line must run).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: substring of a command -> reason to skip it
SKIP_IF = {
    "pip install": "installation",
    "python -m pytest": "the test suite itself",
    "--device cuda": "needs a GPU",
    "torchrun": "several processes (scale-out)",
    "--allow-download": "needs the network",
    "scripts/train_": "training scripts (minutes; tested by test_training / the demos' --retrain)",
}

#: command prefix (after ``lidmem``) -> options appended to make the run small
SMALL = {
    ("demo", "vonmises"): ["--n-samples", "200", "--steps", "300"],
    ("demo", "digits"): ["--num-samples", "24", "--sampling-steps", "5", "--no-generator"],
    ("demo", "text2image"): ["--n-generations", "1", "--n-other-prompts", "4", "--n-other-images", "8", "--repeats", "1",
                             "--num-inference-steps", "10"],
    ("audit",): ["--sampling-steps", "5", "--n-scores", "16", "--lpca-k", "10", "--no-report"],
    ("train",): ["--steps", "20", "--grid", "4", "--sampling-steps", "3", "--checkpoint-every", "10"],
    ("benchmark", "detectors"): ["--n-generations", "1", "--num-inference-steps", "10", "--n-other-prompts", "4"],
    ("t2i", "detect-prompts"): ["--n-generations", "1", "--steps", "10", "--limit", "4"],
    ("t2i", "attribute"): ["--n-generations", "1", "--steps", "10"],
    ("t2i", "mitigate"): ["--ks", "1", "--repeats", "1", "--n-generations", "1", "--steps", "10"],
}
#: option -> value that replaces the README's (sizes)
SMALL_VALUES = {"--num-samples": "16", "--k": "20"}


def _readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _skip_reason(line: str) -> str | None:
    return next((why for key, why in SKIP_IF.items() if key in line), None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Small real inputs for the README's placeholders."""
    from PIL import Image

    from lidmem.data.images import load_digits_images
    from lidmem.text2image import toydata
    from lidmem.utils import shipped_weights

    root = tmp_path_factory.mktemp("readme")
    weights = shipped_weights()
    images, _ = load_digits_images()  # (n, 1, 8, 8) in [-1, 1]
    imgs = np.asarray(images)[:40]
    train = root / "train_pngs"
    samples = root / "my_samples"
    for folder, arr in ((train, np.concatenate([imgs, np.repeat(imgs[:2], 4, axis=0)])), (samples, imgs[:10])):
        folder.mkdir()
        for i, img in enumerate(arr):
            px = np.clip((img[0] + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
            Image.fromarray(px, mode="L").save(folder / f"{i:04d}.png")
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, 2 * np.pi, 300)
    np.save(root / "data.npy", np.c_[np.cos(theta), np.sin(theta), np.zeros(300)].astype(np.float32))
    data = toydata.make_captioned_digits()
    mem = [data.captions[i] for i in data.memorized_indices[:2]]
    (root / "prompts.txt").write_text("\n".join(mem + toydata.non_memorized_prompts(2, seed=1)) + "\n")
    ref = data.images[int(data.memorized_indices[0])].numpy()
    Image.fromarray(np.clip((ref[0] + 1.0) * 127.5, 0, 255).round().astype(np.uint8), mode="L").save(root / "train_img.png")
    return {
        "data.npy": str(root / "data.npy"),
        "model.safetensors": str(weights["digits_unet"]),
        "train_pngs/": str(train),
        "my_samples/": str(samples),
        "images/": str(train),
        "path/to/sd": str(weights["text2image"]),
        "prompts.txt": str(root / "prompts.txt"),
        "train_img.png": str(root / "train_img.png"),
        '"..."': mem[0],
        "__root__": str(root),
    }


def _prepare(line: str, inputs: dict[str, str]) -> str:
    """The README line as a bash command with small inputs and sizes."""
    text = re.sub(r"\s+#\s.*$", "", line)  # trailing comment
    for name, value in sorted(inputs.items(), key=lambda kv: -len(kv[0])):
        if name.startswith("__"):
            continue
        text = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w-])", lambda _m, v=value: shlex.quote(v), text)
    for opt, value in SMALL_VALUES.items():
        text = re.sub(rf"({re.escape(opt)}[ =])\S+", rf"\g<1>{value}", text)
    argv = shlex.split(text.replace("$(", "( "), comments=True)
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        argv.pop(0)
    if argv and argv[0] == "lidmem":
        sub = tuple(t for t in argv[1:3] if not t.startswith("-"))
        for prefix, extra in SMALL.items():
            if sub[: len(prefix)] == prefix:
                text += " " + " ".join(extra)
                break
    return text


@pytest.fixture(scope="module")
def shell_env(inputs) -> dict[str, str]:
    """PATH with ``lidmem`` and ``python`` shims that run this interpreter (the tested package)."""
    bin_dir = Path(inputs["__root__"]) / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, cmd in (("lidmem", f'exec "{sys.executable}" -m lidmem.cli.main "$@"'), ("python", f'exec "{sys.executable}" "$@"')):
        shim = bin_dir / name
        shim.write_text(f"#!/usr/bin/env bash\n{cmd}\n")
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "LIDMEM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


COMMANDS = _readme_commands()


def test_readme_has_commands():
    assert len(COMMANDS) >= 10, COMMANDS
    assert any(c.startswith("lidmem demo") for c in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("line", COMMANDS, ids=[f"{i:02d}:{c[:60]}" for i, c in enumerate(COMMANDS)])
def test_readme_command_runs(line, inputs, shell_env):
    """Lines run in README order in one folder (``out/...`` of an earlier line is there for a later one)."""
    reason = _skip_reason(line)
    if reason:
        pytest.skip(reason)
    command = _prepare(line, inputs)
    unknown = re.findall(r"(?<![\w/])(?:path/to/\S*|my_\S*|\.\./\S*)", command)
    assert not unknown, f"README placeholder(s) {unknown} have no test input; add them to the `inputs` fixture in {__file__}"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=shell_env,
                          cwd=inputs["__root__"], timeout=900)
    assert proc.returncode == 0, f"`{line}`\nran as `{command}`\nexited {proc.returncode}:\n{proc.stderr[-3000:]}"
