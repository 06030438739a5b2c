"""Bad inputs of issue 20 item 6, each refused at the boundary with the argument named (Python
name in the API, ``--option`` in the CLI), and the CLI rows: a factory's network that fails inside
a command is ONE ``error:`` line naming the model reference (exit 2), ``--debug`` keeps the
traceback; factories returning an EDM denoiser or a ScoreNetwork built from a closure score the same
numbers through ``lidmem score`` as through the Python API; small training sets (item 7) get
local PCA's ``k = min(100, n - 1)``, said in the output and summary.json.

Every row failed on the main of 2026-12-07 (before: torch's ``AssertionError``, ``Overflow when
unpacking long long``, ``range() arg 3 must not be zero``, a dtype error from inside the network,
the user's ``TypeError``, a silent result, ``lid_star.k=100 must be <= n_train - 1``, a traceback).
"""

from __future__ import annotations

import copy
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import lidmem
from lidmem import VPSDE, ScoreModel
from lidmem._validation import ArgumentError, ArgumentTypeError
from lidmem.cli.main import app

WEIGHTS = Path(lidmem.__file__).parent / "weights"
DIGITS_UNET = WEIGHTS / "digits_unet.safetensors"
VONMISES = WEIGHTS / "vonmises.safetensors"
GENERATOR = WEIGHTS / "digits_generator.safetensors"
runner = CliRunner()


# --- the models and data of the battery -------------------------------------------------------
def _closure_model() -> ScoreModel:
    """A score model the way a user writes one: a closure over an MLP (no registered parameters)."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.SiLU(), torch.nn.Linear(16, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return ScoreModel(lambda x, t: net(torch.cat([x, t[:, None]], 1)), VPSDE(), prediction="score")


def _nan_model() -> ScoreModel:
    return ScoreModel(lambda x, t: x * float("nan"), VPSDE(), prediction="score")


def _x() -> torch.Tensor:
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(1))


def _train(n: int = 40, shape: tuple[int, ...] = (1, 8, 8)) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, *shape)).astype(np.float32)


def _audit(**kw):
    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.memorization.audit import audit_memorization

    args = dict(num_samples=4, num_inference_steps=2, t0_sweep=None, normal_bundle=None, train=_train())
    args.update(kw)
    return audit_memorization(load_score_model(DIGITS_UNET), **args)


class _Gen(torch.nn.Module):
    """A generator with its latent width (``latent_dim``), as lidmem's loaders return."""

    latent_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 6)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lin(z)


def _library_rows():
    from lidmem.diffusion import sampling
    from lidmem.diffusion.checkpoint import load_network, load_score_model
    from lidmem.estimators import flipd, flipd_map, jacobian_rank, local_pca, normal_bundle
    from lidmem.generators import load_generator, sample_generator
    from lidmem.models import load_model
    from lidmem.utils import resolve_device
    from lidmem.workflows.audit import load_audit_model

    m, x = _closure_model(), _x()
    W = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    big = 2**80
    # (id, call, exception class, texts the message must contain)
    return [
        # seeds
        ("flipd seed=2**80", lambda: flipd(m, x, seed=big, trace="hutchinson"), ArgumentError, ("seed=", "2**64 - 1")),
        ("flipd seed=-1", lambda: flipd(m, x, seed=-1, trace="hutchinson"), ArgumentError, ("seed=-1", "2**64 - 1")),
        ("normal_bundle seed=2**80", lambda: normal_bundle(m, x, seed=big), ArgumentError, ("seed=", "2**64 - 1")),
        ("sample_ode seed=2**80", lambda: sampling.sample_ode(m, (2, 4), steps=2, seed=big), ArgumentError, ("seed=",)),
        ("sample_euler_maruyama seed=2**80", lambda: sampling.sample_euler_maruyama(m, (2, 4), steps=2, seed=big), ArgumentError, ("seed=",)),
        ("local_pca seed=2**80", lambda: local_pca(torch.randn(50, 4), k=5, seed=big, radius="percentile"), ArgumentError, ("seed=",)),
        ("sample_generator seed=2**80", lambda: sample_generator(load_generator(GENERATOR), 3, seed=big), ArgumentError, ("seed=",)),
        ("audit seed=2**80", lambda: _audit(seed=big), ArgumentError, ("seed=",)),
        # batch sizes
        ("audit batch_size=0", lambda: _audit(batch_size=0), ArgumentError, ("batch_size=0", ">= 1")),
        ("sample_generator batch_size=0", lambda: sample_generator(load_generator(GENERATOR), 3, batch_size=0), ArgumentError,
         ("batch_size=0",)),
        # inputs the model refuses
        ("flipd float64 ndarray x on a closure", lambda: flipd(m, x.double().numpy()), ArgumentTypeError, ("x has dtype float64", "float32")),
        ("flipd unknown extra_args key", lambda: flipd(m, x, extra_args={"foo": 1}), ArgumentTypeError, ("extra_args", "'foo'")),
        ("flipd_map unknown extra_args key", lambda: flipd_map(m, x, extra_args={"foo": 1}), ArgumentTypeError, ("extra_args", "'foo'")),
        ("normal_bundle unknown extra_args key", lambda: normal_bundle(m, x, extra_args={"foo": 1}), ArgumentTypeError, ("extra_args", "'foo'")),
        ("flipd NaN score model", lambda: flipd(_nan_model(), x), ArgumentError, ("model returned NaN",)),
        ("normal_bundle NaN score model", lambda: normal_bundle(_nan_model(), x), ArgumentError, ("model returned NaN",)),
        # generators
        ("jacobian_rank NaN generator", lambda: jacobian_rank(lambda z: torch.full((len(z), 6), float("nan")), torch.randn(4, 3)),
         ArgumentError, ("generator", "NaN")),
        ("jacobian_rank generator with a NaN Jacobian", lambda: jacobian_rank(lambda z: torch.sqrt(z * 0) @ W, torch.randn(4, 3)),
         ArgumentError, ("Jacobian", "NaN or infinite", "z[0]")),
        ("jacobian_rank latent too wide (closure)", lambda: jacobian_rank(lambda z: z @ W, torch.randn(4, 5)), ArgumentError,
         ("z of shape (4, 5)", "latents")),
        ("jacobian_rank latent too wide (latent_dim)", lambda: jacobian_rank(_Gen(), torch.randn(4, 5)), ArgumentError,
         ("z has shape (4, 5)", "(n, 3)", "latent_dim")),
        # data
        ("local_pca empty data", lambda: local_pca(torch.zeros(0, 4)), ArgumentError, ("data is empty",)),
        ("audit train of another shape", lambda: _audit(train=_train(40, (3, 4, 4))), ArgumentError, ("(3, 4, 4)", "(1, 8, 8)")),
        ("audit all-NaN train", lambda: _audit(train=np.full((40, 1, 8, 8), np.nan, np.float32)), ArgumentError,
         ("train holds NaN", "40 of 40")),
        ("audit train of 2 images", lambda: _audit(train=_train(2)), ArgumentError, ("train has 2", "at least 3")),
        # devices (a CPU-only torch: torch.backends.cuda.is_built() is patched to False)
        ("load_score_model device='cuda'", lambda: load_score_model(VONMISES, device="cuda"), ArgumentError, ("device='cuda'", "device='cpu'")),
        ("load_network device='cuda'", lambda: load_network(VONMISES, device="cuda"), ArgumentError, ("device='cuda'", "without CUDA")),
        ("load_model device='cuda'", lambda: load_model(str(VONMISES), device="cuda"), ArgumentError, ("device='cuda'",)),
        ("load_model device='tpu'", lambda: load_model(str(VONMISES), device="tpu"), ArgumentError, ("device='tpu'", "cpu, cuda")),
        ("load_generator device='cuda'", lambda: load_generator(GENERATOR, device="cuda"), ArgumentError, ("device='cuda'",)),
        ("load_audit_model device='cuda'", lambda: load_audit_model(DIGITS_UNET, device="cuda"), ArgumentError, ("device='cuda'",)),
        ("sample_ode device='cuda'", lambda: sampling.sample_ode(m, (2, 4), steps=2, device="cuda"), ArgumentError, ("device='cuda'",)),
        ("sample_ode device='tpu'", lambda: sampling.sample_ode(m, (2, 4), steps=2, device="tpu"), ArgumentError, ("device='tpu'",)),
        ("get_timesteps device='cuda'", lambda: sampling.get_timesteps(3, spacing="log", device="cuda"), ArgumentError, ("device='cuda'",)),
        ("resolve_device('cuda') (training)", lambda: resolve_device("cuda"), ArgumentError, ("device='cuda'",)),
    ]


LIBRARY_IDS = [r[0] for r in _library_rows()]


@pytest.fixture
def cpu_only_torch(monkeypatch):
    """This torch has no CUDA, as on a CPU-only install (also on a machine with a GPU)."""
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("row_id", LIBRARY_IDS)
def test_library_refuses_naming_the_argument(row_id, cpu_only_torch):
    _, call, cls, needles = {r[0]: r for r in _library_rows()}[row_id]
    with pytest.raises(cls) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{row_id}: {msg!r} does not say {needle!r}"
    assert info.value.argument in msg or info.value.argument == "lid_star"


def test_a_list_x_is_what_torch_tensor_of_it_gives():
    """A Python list of floats is float32, as ``torch.tensor(list)``; with a float64 network it is
    cast to the network's dtype: same FLIPD as the tensor in both cases (main: a dtype error)."""
    from lidmem.estimators import flipd, jacobian_rank, normal_bundle

    m, x = _closure_model(), _x()
    torch.testing.assert_close(flipd(m, x.tolist()), flipd(m, x))
    torch.testing.assert_close(normal_bundle(m, x.tolist(), n_scores=8), normal_bundle(m, x, n_scores=8))
    net64 = torch.nn.Linear(3, 6).double()
    z = torch.randn(4, 3, dtype=torch.float64)
    assert jacobian_rank(net64, z.tolist()).tolist() == jacobian_rank(net64, z).tolist() == [3, 3, 3, 3]


def test_seed_range_is_torch_and_numpy_range():
    from lidmem._validation import check_seed, make_generator

    assert check_seed(2**64 - 1) == 2**64 - 1 and check_seed(0) == 0
    make_generator(2**64 - 1)
    np.random.default_rng(2**64 - 1)
    with pytest.raises(ArgumentError, match=r"seed=18446744073709551616 is outside"):
        check_seed(2**64)
    with pytest.raises(ArgumentTypeError, match="seed must be an int"):
        check_seed(1.5)


# --- damaged checkpoint metadata --------------------------------------------------------------
def _damage(meta: dict, field: str, value) -> dict:
    m = copy.deepcopy(meta)
    where, _, key = field.rpartition(".")
    target = m[where] if where else m
    if value is _DROP:
        target.pop(key)
    else:
        target[key] = value
    return m


_DROP = object()
METADATA_ROWS = {
    "network.dim=-3": ("network.dim", -3, ("metadata field 'network'", "dim=-3")),
    "network.type unknown": ("network.type", "transformer9", ("metadata field 'network'", "'transformer9'")),
    "network missing": ("network", _DROP, ("metadata field 'network'", "missing")),
    "network a list": ("network", [1, 2], ("metadata field 'network'", "JSON object")),
    "network.hidden text": ("network.hidden", "big", ("metadata field 'network'", "hidden")),
    "sde.type unknown": ("sde.type", "foo", ("metadata field 'sde'", "'foo'")),
    "sde null": ("sde", None, ("metadata field 'sde'", "missing")),
    "sde.beta_min text": ("sde.beta_min", "x", ("metadata field 'sde'",)),
    "prediction unknown": ("prediction", "noise", ("metadata field 'prediction'", "'noise'")),
    "data_shape negative": ("data_shape", [-2], ("metadata field 'data_shape'", "positive integers")),
    "data_shape text": ("data_shape", "2", ("metadata field 'data_shape'",)),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    from safetensors.torch import load_file, save_file

    from lidmem.diffusion.checkpoint import read_metadata

    d = tmp_path_factory.mktemp("damaged")
    state, meta = load_file(str(VONMISES)), read_metadata(VONMISES)
    out = {}
    for i, (row, (field, value, _)) in enumerate(METADATA_ROWS.items()):
        p = d / f"damaged{i}.safetensors"
        save_file(state, str(p), metadata={"lidmem": json.dumps(_damage(meta, field, value))})
        out[row] = p
    return out


@pytest.mark.parametrize("row", list(METADATA_ROWS))
def test_damaged_metadata_names_the_file_and_the_field(row, damaged):
    """Python API and ``lidmem inspect`` / ``lidmem mmh`` alike (main: ``'<' not supported ...``,
    an AttributeError traceback, ``dim=-3 must be >= 1`` without the file, or accepted)."""
    from lidmem.models import load_model

    path, needles = damaged[row], METADATA_ROWS[row][2]
    with pytest.raises(ValueError) as info:
        load_model(str(path))
    for needle in (path.name, *needles):
        assert needle in str(info.value), f"{row}: {info.value}"
    for argv in (["inspect", str(path)], ["mmh", "--model", str(path), "--data", str(path.parent / "pts.npy"), "--out", str(path.parent / "o")]):
        np.save(path.parent / "pts.npy", np.random.default_rng(0).normal(size=(30, 2)))
        res = runner.invoke(app, argv)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, res.stderr, res.exception)
        assert path.name in lines[0] and needles[0] in lines[0], lines[0]


# --- CLI: factories ---------------------------------------------------------------------------
FACTORIES = '''
import torch
from lidmem import VPSDE
from lidmem.models import EDMDenoiser, ScoreNetwork


class Denoiser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, sigma):
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) + 0.05 * self.conv(x)


def edm():
    torch.manual_seed(0)
    return EDMDenoiser(Denoiser(), 0.002, 80.0, (1, 8, 8))


def closure():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(65, 32), torch.nn.SiLU(), torch.nn.Linear(32, 64))

    def eps(x, t):
        return net(torch.cat([x.flatten(1), t[:, None]], 1)).reshape(x.shape)

    return ScoreNetwork(eps, VPSDE(), prediction="epsilon", data_shape=(1, 8, 8))


def edm_closure():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    return EDMDenoiser(lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) + 0.05 * conv(x), 0.002, 80.0, (1, 8, 8))


def broken():
    return ScoreNetwork(lambda x, t: x.flatten(1) @ torch.ones(3, 3), VPSDE(), prediction="epsilon", data_shape=(1, 8, 8))


def nan_net():
    return ScoreNetwork(lambda x, t: x * float("nan"), VPSDE(), prediction="epsilon", data_shape=(1, 8, 8))
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A user's module ``j20_factories`` on the import path (the test harness's sys.path, as a
    user's PYTHONPATH=.), and a folder of six 8x8 grey images."""
    (tmp_path / "j20_factories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    g = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(imgs / f"img{i}.png")
    return tmp_path


@pytest.mark.parametrize("factory", ["edm", "closure", "edm_closure"])
def test_factory_scores_through_the_cli_as_through_python(factory, factories):
    """Issue 20's table row: ``lidmem score --model pkg.mod:factory`` of an EDM denoiser or a
    ScoreNetwork built from a closure runs (main of the issue: a traceback, exit 1) and writes the
    FLIPD and normal-bundle values the Python API gives on the same images."""
    import pandas as pd

    from lidmem.defaults import FLIPD_T0, NB_T0, NB_THRESHOLD
    from lidmem.estimators import flipd, normal_bundle
    from lidmem.models import load_model

    ref = f"j20_factories:{factory}"
    res = runner.invoke(app, ["inspect", ref])
    assert res.exit_code == 0, res.output
    assert "model call" in res.stdout and "ok on 2 points of shape (1, 8, 8)" in res.stdout
    out = factories / f"scores_{factory}"
    res = runner.invoke(app, ["score", "--model", ref, "--data", str(factories / "imgs"), "--out", str(out),
                              "--metrics", "flipd,nb", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    table = pd.read_parquet(out / "scores.parquet").sort_values("id")
    x = torch.from_numpy(np.stack([np.asarray(Image.open(factories / "imgs" / i), np.float32)[None] for i in table["id"]]))
    x = -1 + 2 * x / 255
    model = load_model(ref)
    want = flipd(model, x, FLIPD_T0, trace="exact", seed=0).double().numpy()
    assert np.isfinite(table["flipd"]).all() and np.isfinite(want).all()
    np.testing.assert_allclose(table["flipd"].to_numpy(), want, rtol=1e-4, atol=1e-3)
    nb = normal_bundle(model, x, NB_T0, threshold=NB_THRESHOLD, seed=0).numpy()
    assert ((table["nb"] >= 0) & (table["nb"] <= 64)).all()
    assert abs(float(table["nb"].mean()) - float(nb.mean())) <= 2.0, (table["nb"].tolist(), nb.tolist())


@pytest.mark.parametrize("factory,command,needles", [
    ("broken", "score", ("the model j20_factories:broken failed", "RuntimeError", "LIDMEM_DEBUG=1")),
    ("broken", "score-nb", ("the model j20_factories:broken failed", "RuntimeError")),
    ("broken", "inspect", ("j20_factories:broken", "calling the model", "RuntimeError")),
    ("nan_net", "score", ("--model j20_factories:nan_net", "NaN")),
    ("nan_net", "score-nb", ("--model j20_factories:nan_net", "NaN")),
    ("nan_net", "inspect", ("j20_factories:nan_net", "NaN")),
])
def test_failing_factory_is_one_error_line(factory, command, needles, factories):
    """A network that raises or returns NaN inside a command: one ``error:`` line naming the
    model reference, exit 2, no warnings before it (main: a rich traceback, exit 1)."""
    ref = f"j20_factories:{factory}"
    score = ["score", "--model", ref, "--data", str(factories / "imgs"), "--out", str(factories / "o"), "--no-progress"]
    argv = {"inspect": ["inspect", ref], "score": score + ["--metrics", "flipd"], "score-nb": score + ["--metrics", "nb"]}[command]
    res = runner.invoke(app, argv)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_debug_keeps_the_traceback(factories, monkeypatch):
    """``lidmem --debug`` and ``LIDMEM_DEBUG=1``: the model's own exception propagates."""
    argv = ["score", "--model", "j20_factories:broken", "--data", str(factories / "imgs"), "--out", str(factories / "o"),
            "--metrics", "flipd", "--no-progress"]
    res = runner.invoke(app, ["--debug", *argv])
    assert isinstance(res.exception, RuntimeError) and "mat1 and mat2" in str(res.exception), res.output
    monkeypatch.setenv("LIDMEM_DEBUG", "1")
    res = runner.invoke(app, argv)
    assert isinstance(res.exception, RuntimeError), res.output
    monkeypatch.delenv("LIDMEM_DEBUG")
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and res.stderr.startswith("error: "), res.output


def test_an_unexpected_error_without_a_model_is_one_line_exit_1(monkeypatch, tmp_path):
    """A lidmem bug in a command without a model: one line, exit 1, the debug switch named."""
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=(30, 2)))

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    from lidmem.estimators import LocalPCA

    monkeypatch.setattr(LocalPCA, "fit", bug)
    res = runner.invoke(app, ["lid", str(tmp_path / "p.npy"), "--k", "5", "--no-progress"])
    assert res.exit_code == 1, (res.output, res.exception)
    assert res.stderr.strip().splitlines() == [f"error: ZeroDivisionError: a bug (a lidmem bug: please report it; LIDMEM_DEBUG=1 (or lidmem --debug) shows the traceback)"]


# --- CLI: seeds and devices -------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["mmh", "--model", str(VONMISES), "--data", "{pts}", "--out", "{out}", "--seed", str(2**80)],
    ["score", "--model", str(DIGITS_UNET), "--data", "{pts}", "--out", "{out}", "--seed", str(2**80)],
    ["audit", "--model", str(DIGITS_UNET), "--train", "{train}", "--out", "{out}", "--seed", str(2**80)],
    ["lid", "{pts}", "--seed", str(2**80)],
    ["score", "--model", str(DIGITS_UNET), "--data", "{pts}", "--out", "{out}", "--device", "cuda"],
    ["mmh", "--model", str(VONMISES), "--data", "{pts}", "--out", "{out}", "--device", "cuda"],
    ["inspect", str(VONMISES), "--device", "cuda"],
    ["inspect", str(VONMISES), "--device", "tpu"],
], ids=["mmh --seed", "score --seed", "audit --seed", "lid --seed", "score --device cuda", "mmh --device cuda", "inspect --device cuda",
        "inspect --device tpu"])
def test_cli_seed_and_device_named_before_the_model_loads(argv, tmp_path, cpu_only_torch, monkeypatch):
    import lidmem.models.loader as loader

    def forbidden(*a, **k):
        raise AssertionError("the model was loaded before the option was checked")

    monkeypatch.setattr(loader, "load_model", forbidden)
    monkeypatch.setattr("lidmem.models.load_model", forbidden)
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(30, 2)))
    np.save(tmp_path / "train.npy", _train(20))
    fill = {"pts": str(tmp_path / "pts.npy"), "train": str(tmp_path / "train.npy"), "out": str(tmp_path / "o")}
    argv = [a.format(**fill) for a in argv]
    res = runner.invoke(app, argv)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, (res.output, res.exception)
    option = argv[-2]
    assert f"{option}=" in lines[0] and "_" not in option, lines[0]
    if option == "--seed":
        assert "2**64 - 1" in lines[0]
    else:
        assert "--device='cpu'" in lines[0] or "cpu, cuda" in lines[0], lines[0]


# --- item 7: small training sets ----------------------------------------------------------------
def test_audit_on_40_images_adapts_lpca_k(tmp_path):
    """``lidmem audit`` on 40 training images runs with local PCA k = 39, says so on the terminal
    and in summary.json (main: ``--lpca-k=100 must be <= n_train - 1 = 39`` after the samples)."""
    np.save(tmp_path / "train.npy", _train(40))
    out = tmp_path / "audit"
    res = runner.invoke(app, ["audit", "--model", str(DIGITS_UNET), "--train", str(tmp_path / "train.npy"), "--out", str(out),
                              "--num-samples", "4", "--sampling-steps", "2", "--flipd-sweep", "", "--nb-max-dim", "0",
                              "--flipd-trace", "hutchinson", "--n-probes", "1", "--no-report"])
    assert res.exit_code == 0, (res.output, res.exception)
    text = " ".join(res.output.split())
    assert "local PCA k = 39 (default min(100, n_train - 1) = 39 for n_train = 40" in text, text
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["lpca_k"] == 39 and s["settings"]["lpca_k_rule"] == "default min(100, n_train - 1) = 39 for n_train = 40"
    # an explicit k the set cannot give: named, before the model loads
    res = runner.invoke(app, ["audit", "--model", str(DIGITS_UNET), "--train", str(tmp_path / "train.npy"), "--out", str(tmp_path / "o2"),
                              "--lpca-k", "40"])
    assert res.exit_code == 2 and "--lpca-k=40 must be <= n_train - 1 = 39" in " ".join(res.stderr.split()), res.stderr


def test_audit_python_default_k_adapts_and_explicit_k_is_kept():
    r = _audit()
    assert r.summary["settings"]["lpca_k"] == 39 and "lpca_k_rule" in r.summary["settings"]
    assert np.isfinite(r.lid_star_train).all() and (r.lid_star_train >= 0).all() and (r.lid_star_train <= 64).all()
    from lidmem.estimators import LocalPCA, local_pca

    # the adapted default is exactly LocalPCA(k=39): same LID_* of every training image
    flat = _train().reshape(40, -1)
    np.testing.assert_array_equal(r.lid_star_train, local_pca(flat, k=39, tau="fo", radius=0.0).numpy())
    r5 = _audit(lid_star=LocalPCA(k=5))
    assert r5.summary["settings"]["lpca_k"] == 5 and "lpca_k_rule" not in r5.summary["settings"]


def test_mmh_on_40_points_adapts_k(tmp_path):
    g = np.random.default_rng(0)
    ang = g.uniform(0, 2 * math.pi, 40)
    np.save(tmp_path / "pts.npy", np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32))
    out = tmp_path / "mmh"
    res = runner.invoke(app, ["mmh", "--model", str(VONMISES), "--data", str(tmp_path / "pts.npy"), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "local PCA k = 39" in " ".join(res.output.split())
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["local_pca"]["k"] == 39 and "min(100, n_train - 1)" in s["settings"]["local_pca"]["k_rule"]
