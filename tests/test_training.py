"""Denoising score matching against an analytic ground truth (Gaussian data), checkpoints,
bit-identical resumption, Ctrl-C safety and image-shaped data."""

import pytest
import torch
from torch import nn

from lidmem import VPSDE, VESDE, ScoreModel
from lidmem.diffusion.checkpoint import load_score_model, read_metadata
from lidmem.diffusion.mlp import MLPScoreNet
from lidmem.diffusion.networks import register_network
from lidmem.diffusion.training import TrainResult, sample_times, train_score_model, train_state_path
from lidmem.utils import append_dims

MU = torch.tensor([1.0, -0.5])
S = 0.3


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_data(n=2000, seed=1):
    g = torch.Generator().manual_seed(seed)
    return MU + S * torch.randn(n, 2, generator=g)


def analytic_score(sde, x, t):
    psi = append_dims(sde.psi(t), x.ndim)
    sig = append_dims(sde.sigma(t), x.ndim)
    return -(x - psi * MU) / (psi**2 * S**2 + sig**2)


def small_net(seed=0):
    torch.manual_seed(seed)
    return MLPScoreNet(2, hidden=64, depth=2, time_embed_dim=16)


def rel_score_error(model, sde, t):
    g = torch.Generator().manual_seed(5)
    x = MU + 0.5 * torch.randn(500, 2, generator=g)
    tt = torch.full((500,), t)
    with torch.no_grad():
        est = model(x, tt)
    true = analytic_score(sde, x, tt)
    return float(((est - true).norm(dim=1) / true.norm(dim=1)).median())


@pytest.mark.parametrize("prediction", ["epsilon", "score", "x0", "v"])
def test_dsm_learns_analytic_score(prediction):
    sde = VPSDE()
    data = gaussian_data()
    res = train_score_model(small_net(), data, sde, prediction=prediction, steps=400, batch_size=128, lr=2e-3, seed=0, progress=False)
    assert isinstance(res, TrainResult) and isinstance(res.model, ScoreModel)
    assert res.steps == 400 and res.losses.shape == (400,)
    assert res.losses[-100:].mean() < res.losses[:20].mean()
    # an untrained net is off by ~100%; the learned score is within 15% at moderate noise
    assert rel_score_error(res.model, sde, 0.3) < 0.15
    assert rel_score_error(res.model, sde, 0.6) < 0.15


def test_untrained_net_is_far_from_the_score():
    # guards the previous test's threshold: it must be able to fail
    model = ScoreModel(small_net(), VPSDE(), prediction="epsilon")
    assert rel_score_error(model, VPSDE(), 0.3) > 0.5


def test_training_does_not_mutate_inputs_and_is_deterministic():
    net, data = small_net(), gaussian_data(200)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data_before = data.clone()
    a = train_score_model(net, data, VESDE(), steps=30, batch_size=32, seed=3, progress=False)
    b = train_score_model(net, data, VESDE(), steps=30, batch_size=32, seed=3, progress=False)
    c = train_score_model(net, data, VESDE(), steps=30, batch_size=32, seed=4, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(data, data_before)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.model.parameters(), c.model.parameters()))


def test_checkpoint_resume_is_bit_identical(tmp_path):
    data = gaussian_data(300)
    full = train_score_model(small_net(), data, VPSDE(), steps=40, batch_size=32, seed=0, progress=False)
    ckpt = tmp_path / "m.safetensors"
    first = train_score_model(small_net(), data, VPSDE(), steps=25, batch_size=32, seed=0, checkpoint=ckpt, checkpoint_every=10, progress=False)
    assert first.steps == 25 and ckpt.is_file() and train_state_path(ckpt).is_file()
    second = train_score_model(small_net(), data, VPSDE(), steps=40, batch_size=32, seed=0, checkpoint=ckpt, progress=False)
    assert second.resumed_from == 25 and second.steps == 40 and len(second.losses) == 40
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), second.model.parameters()))
    assert torch.equal(torch.as_tensor(full.losses), torch.as_tensor(second.losses))
    # the shipped file holds the EMA weights, the SDE and the parametrisation
    meta = read_metadata(ckpt)
    assert meta["sde"] == VPSDE().to_config() and meta["prediction"] == "epsilon" and meta["data_shape"] == [2]
    assert meta["extra"]["training"]["steps"] == 40
    loaded = load_score_model(ckpt)
    x = torch.randn(7, 2)
    with torch.no_grad():
        assert torch.allclose(loaded(x, 0.2), second.model(x, 0.2))
    # other settings cannot silently resume
    with pytest.raises(ValueError, match="batch_size"):
        train_score_model(small_net(), data, VPSDE(), steps=50, batch_size=64, seed=0, checkpoint=ckpt, progress=False)


class _Interrupting(MLPScoreNet):
    """An MLP that raises KeyboardInterrupt on its ``stop_at``-th call (simulates Ctrl-C)."""

    stop_at = 10**9

    def forward(self, x, t):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().forward(x, t)


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    data = gaussian_data(300)
    full = train_score_model(small_net(), data, VPSDE(), steps=30, batch_size=32, seed=0, progress=False)
    torch.manual_seed(0)
    net = _Interrupting(2, hidden=64, depth=2, time_embed_dim=16)
    net.stop_at = 18  # interrupted during step 18: 17 steps done
    ckpt = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_score_model(net, data, VPSDE(), steps=30, batch_size=32, seed=0, checkpoint=ckpt, checkpoint_every=1000, progress=False)
    assert read_metadata(ckpt)["extra"]["training"]["steps"] == 17
    resumed = train_score_model(small_net(), data, VPSDE(), steps=30, batch_size=32, seed=0, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 17
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))


class TinyConv(nn.Module):
    """Conv score net for (n, 1, 4, 4) images (test-only network type)."""

    def __init__(self, channels=8):
        super().__init__()
        self.config = {"type": "test_tinyconv", "channels": channels}
        self.inp = nn.Conv2d(2, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    @classmethod
    def from_config(cls, config):
        return cls(config["channels"])

    def forward(self, x, t):
        tmap = append_dims(t, x.ndim).expand_as(x)
        return self.out(torch.nn.functional.silu(self.inp(torch.cat([x, tmap], 1))))


def test_image_shaped_data_and_checkpoint_roundtrip(tmp_path):
    try:
        register_network("test_tinyconv", lambda cfg: TinyConv.from_config(cfg))
    except ValueError:
        pass
    torch.manual_seed(0)
    data = torch.rand(20, 1, 4, 4) * 2 - 1  # images in [-1, 1]
    ckpt = tmp_path / "img.safetensors"
    res = train_score_model(TinyConv(), data, VPSDE(), steps=50, batch_size=8, seed=0, checkpoint=ckpt, progress=False)
    assert res.losses[-10:].mean() < res.losses[:5].mean()
    meta = read_metadata(ckpt)
    assert meta["data_shape"] == [1, 4, 4] and meta["network"]["type"] == "test_tinyconv"
    loaded = load_score_model(ckpt)
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x, 0.5), res.model(x, 0.5))


def test_sample_times_mixes_uniform_and_log_uniform():
    g = torch.Generator().manual_seed(0)
    t = sample_times(20000, t_min=1e-4, log_uniform_fraction=0.5, seed=g)
    assert float(t.min()) >= 1e-4 and float(t.max()) <= 1.0
    # uniform half: P(t < 0.01) ~ 0.01; log-uniform half: P(t < 0.01) = 2/4 = 0.5 -> total ~0.255
    frac = float((t < 0.01).float().mean())
    assert 0.23 < frac < 0.28


def test_validation_errors():
    data = gaussian_data(50)
    with pytest.raises(ValueError, match="prediction"):
        train_score_model(small_net(), data, VPSDE(), prediction="noise", steps=1, progress=False)
    with pytest.raises(ValueError, match="prediction='v'"):
        train_score_model(small_net(), data, VESDE(), prediction="v", steps=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train_score_model(small_net(), data, VPSDE(), steps=0, progress=False)
    with pytest.raises(ValueError, match="t_min"):
        train_score_model(small_net(), data, VPSDE(), steps=1, t_min=0.0, progress=False)
    with pytest.raises(TypeError, match="sde"):
        train_score_model(small_net(), data, "vp", steps=1, progress=False)
    with pytest.raises(ValueError, match="dim=2"):
        MLPScoreNet(2)(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="time_embed_dim"):
        MLPScoreNet(2, time_embed_dim=7)


def test_mlp_config_roundtrip():
    net = MLPScoreNet(3, hidden=16, depth=2, time_embed_dim=8, activation="gelu")
    clone = MLPScoreNet.from_config(net.config)
    assert clone.config == net.config and clone.config["type"] == "mlp"
    clone.load_state_dict(net.state_dict())
    x, t = torch.randn(4, 3), torch.rand(4)
    assert torch.equal(net(x, t), clone(x, t))
    assert net(torch.randn(4, 1, 3), t).shape == (4, 1, 3)
