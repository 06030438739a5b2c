"""UNetScoreNet: shapes, config round trip through a checkpoint, forward-mode AD (FLIPD's JVP)."""

import pytest
import torch

pytest.importorskip("diffusers")

from lidmem import VPSDE, ScoreModel
from lidmem.diffusion.checkpoint import load_score_model, save_checkpoint
from lidmem.diffusion.networks import build_network
from lidmem.diffusion.unet import UNetScoreNet


def test_forward_shape_and_time_dependence():
    torch.manual_seed(0)
    net = UNetScoreNet(8, block_out_channels=(16, 32)).eval()
    x = torch.randn(3, 1, 8, 8)
    a = net(x, torch.full((3,), 0.1))
    b = net(x, torch.full((3,), 0.9))
    assert a.shape == x.shape
    assert not torch.allclose(a, b)  # the time embedding reaches the output


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = UNetScoreNet(8, in_channels=1, block_out_channels=(16, 32)).eval()
    path = save_checkpoint(tmp_path / "u.safetensors", net, sde=VPSDE(), prediction="epsilon", data_shape=(1, 8, 8))
    model = load_score_model(path)
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.3)
    ref = ScoreModel(net, VPSDE(), prediction="epsilon")
    torch.testing.assert_close(model(x, t), ref(x, t))
    assert type(build_network(net.config)) is UNetScoreNet


def test_jvp_matches_finite_difference():
    torch.manual_seed(0)
    net = UNetScoreNet(8, block_out_channels=(16, 32)).double().eval()
    x, v, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        _, jv = torch.func.jvp(lambda y: net(y, t), (x,), (v,))
        fd = (net(x + 1e-5 * v, t) - net(x - 1e-5 * v, t)) / 2e-5
    torch.testing.assert_close(jv, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"block_out_channels": (12, 32)}, "norm_num_groups"), ({"block_out_channels": (8, 16, 32, 64)}, "divisible"), ({"time_scale": -1.0}, "time_scale")],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetScoreNet(4 if "block_out_channels" in kwargs and len(kwargs["block_out_channels"]) == 4 else 8, **kwargs)


def test_wrong_input_shape_raises():
    net = UNetScoreNet(8, block_out_channels=(16, 32))
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(2, 3, 8, 8), torch.zeros(2))
