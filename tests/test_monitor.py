"""lidmem.monitor: the memorization monitor leaves training alone, logs a fixed schema and its
signal moves the right way on an analytic model with a point mass at one probe image."""

from __future__ import annotations

import copy
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lidmem.data.analytic import GaussianMixtureOnSubspaces
from lidmem.diffusion.score import ScoreModel
from lidmem.diffusion.sde import VPSDE
from lidmem.monitor import LOG_COLUMNS, MemorizationMonitor, evaluate_log, step_summaries


class TinyNet(nn.Module):
    """eps(x, t) for 2x4x4 images, with dropout and batch norm (modes that matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(33, 64)
        self.norm = nn.BatchNorm1d(64)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x.flatten(1), t.reshape(-1, 1).to(x.dtype)], 1)
        return self.out(self.drop(torch.tanh(self.norm(self.inp(h))))).reshape(x.shape)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 2, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _point_mass_models() -> tuple[ScoreModel, ScoreModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(before, after, train probes, held-out, training data): ``after`` has a point mass at the
    last training probe, ``before`` a 3-dimensional component there instead."""
    after = GaussianMixtureOnSubspaces(dims=[3, 0], ambient_dim=6, weights=[0.9, 0.1], seed=0)
    before = GaussianMixtureOnSubspaces(dims=[3, 3], ambient_dim=6, weights=[0.9, 0.1], seed=0)
    before.bases[0] = after.bases[0]
    before.offsets = after.offsets.clone()
    x, _, comp = after.sample(300, seed=1)
    on = x[comp == 0]
    probes = torch.cat([on[:30], after.offsets[1:2].float()])
    return ScoreModel(before, before.sde), ScoreModel(after, after.sde), probes, on[30:70], x


def test_training_state_is_preserved() -> None:
    torch.manual_seed(0)
    net = TinyNet().train()
    net.out.eval()  # a mixed-mode model: each submodule's flag must come back
    net.inp.weight.requires_grad_(False)
    x = _images(8, 0)
    net.out(torch.randn(8, 64)).sum().backward()  # leaves .grad on out.*, none on norm/inp
    grads = {n: (p.grad, None if p.grad is None else p.grad.clone()) for n, p in net.named_parameters()}
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    bn = (net.norm.running_mean.clone(), net.norm.num_batches_tracked.clone())
    modes = {n: m.training for n, m in net.named_modules()}
    mon = MemorizationMonitor(net, x, sde=VPSDE(), prediction="epsilon", every=1, t0=0.05, n_probes=2)

    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    mon.update(1)
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    want = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]

    assert {n: m.training for n, m in net.named_modules()} == modes
    for n, p in net.named_parameters():
        g, g_val = grads[n]
        assert p.grad is g, n  # the same tensor object: nothing accumulated or replaced
        if g is not None:
            assert torch.equal(p.grad, g_val)
        assert torch.equal(p.detach(), params[n])
    assert not net.inp.weight.requires_grad and net.out.weight.requires_grad
    assert torch.equal(net.norm.running_mean, bn[0]) and torch.equal(net.norm.num_batches_tracked, bn[1])  # eval: BN stats untouched
    # scored in eval mode: dropout off, so a second scoring gives the very same numbers
    lid1 = mon.frame["lid"].to_numpy()
    mon.update(2)
    assert np.array_equal(mon.frame[mon.frame.step == 2]["lid"].to_numpy(), lid1)


def test_ema_module_and_diffusers_ema_model_are_scored() -> None:
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    net = TinyNet().train()
    ema_net = copy.deepcopy(net)
    with torch.no_grad():
        for p in ema_net.parameters():
            p.mul_(0.5)
    x = _images(6, 1)
    ref = MemorizationMonitor(ema_net, x, sde=VPSDE(), t0=0.05).score(0)
    mod = MemorizationMonitor(net, x, sde=VPSDE(), t0=0.05, ema=ema_net).score(0)
    plain = MemorizationMonitor(net, x, sde=VPSDE(), t0=0.05).score(0)
    assert mod.lid_train_median == ref.lid_train_median != plain.lid_train_median

    ema = EMAModel(ema_net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    dif = MemorizationMonitor(net, x, sde=VPSDE(), t0=0.05, ema=ema).score(0)
    assert dif.lid_train_median == pytest.approx(ref.lid_train_median, abs=1e-5)
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))  # training weights back in place
    assert net.training


def test_log_schema_atomic_and_resume(tmp_path) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    log = tmp_path / "mon" / "monitor.parquet"
    mon = MemorizationMonitor(net, _images(5, 0), sde=VPSDE(), heldout=_images(3, 1), every=10, t0=0.05, log=log,
                              image_ids=[10, 11, 12, 13, 14])
    assert [mon.update(s) for s in (1, 5, 9)] == [None, None, None]
    for s in (0, 10, 20):
        mon.update(s)
    df = pd.read_parquet(log)  # plain pandas, no lidmem
    assert tuple(df.columns) == LOG_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        "step": "int64", "image_id": "int64", "split": "string", "lid": "float64", "t0": "float64", "z": "float64",
        "fall_z": "float64", "drop": "float64", "flagged": "bool", "signal": "float64", "memorizing": "bool", "seconds": "float64"}
    assert len(df) == 3 * 8 and sorted(df.step.unique()) == [0, 10, 20]
    assert sorted(df[df.split == "train"].image_id.unique()) == [10, 11, 12, 13, 14]
    assert sorted(df[df.split == "heldout"].image_id.unique()) == [0, 1, 2]
    assert (df.t0 == 0.05).all() and (df[df.step == 0]["drop"] == 0).all()
    # fall_z: the change since the previous scored step (window=1), so none at step 0; from step 10 on
    # scored against the held-out changes
    assert df[df.step == 0].fall_z.isna().all() and df[df.step >= 10].fall_z.notna().all()
    assert not list(log.parent.glob("*.tmp"))
    assert list(step_summaries(df).step) == [0, 10, 20]

    # a rerun continues the log; scoring step 10 again replaces steps >= 10
    again = MemorizationMonitor(net, _images(5, 0), sde=VPSDE(), heldout=_images(3, 1), every=10, t0=0.05, log=log,
                                image_ids=[10, 11, 12, 13, 14])
    assert [h.step for h in again.history_] == [0, 10, 20]
    again.update(10)
    df2 = pd.read_parquet(log)
    assert sorted(df2.step.unique()) == [0, 10] and len(df2) == 16
    # a log written before the fall test (no fall_z column) is continued; its steps have no fall scores
    df2.drop(columns=["fall_z"]).to_parquet(log, index=False)
    old = MemorizationMonitor(net, _images(5, 0), sde=VPSDE(), heldout=_images(3, 1), every=10, t0=0.05, log=log,
                              image_ids=[10, 11, 12, 13, 14])
    assert [h.step for h in old.history_] == [0, 10] and old.frame.fall_z.isna().all()
    old.update(20)
    assert tuple(pd.read_parquet(log).columns) == LOG_COLUMNS
    fresh = MemorizationMonitor(net, _images(5, 0), sde=VPSDE(), every=10, t0=0.05, log=log, resume=False)
    fresh.update(30)
    assert sorted(pd.read_parquet(log).step.unique()) == [30]


@pytest.mark.parametrize("heldout", [True, False])
def test_point_mass_at_a_probe_lowers_its_lid_and_raises_the_signal(heldout: bool) -> None:
    before, after, probes, ho, train = _point_mass_models()
    mon = MemorizationMonitor(before, probes, heldout=ho if heldout else None, train_data=train, every=1, min_flagged=1, n_probes=8,
                              persistence=1, z_threshold=2.75)  # 31 probes: one lies at z = -2.6 by Hutchinson noise
    assert 0 < mon.t0_ < 0.5
    s1 = mon.update(1)
    s2 = mon.update(2, after)
    df = mon.frame
    lid = df[(df.split == "train")].pivot(index="image_id", columns="step", values="lid")
    # at step 1 the probe lies on a 3-dimensional component like the others; at step 2 on a point mass
    assert abs(lid.loc[30, 1] - 3) < 1.5 and abs(lid.loc[30, 2]) < 0.3
    assert (lid.drop(index=30)[2] - lid.drop(index=30)[1]).abs().max() < 0.5  # the others keep their LID
    assert not s1.memorizing and s1.n_flagged == 0
    assert s2.memorizing and s2.flagged == (30,) and s2.fell_most[0] == 30
    assert s2.signal > s1.signal
    assert mon.first_alarm == 2
    if heldout:
        assert 0.3 < s1.auroc < 0.7  # training and held-out probes alike
    # the default persistence wants the image below -z_threshold at two consecutive scored steps
    slow = MemorizationMonitor(before, probes, heldout=ho if heldout else None, train_data=train, every=1, min_flagged=1, n_probes=8,
                               z_threshold=2.75)
    assert [slow.update(k, m).memorizing for k, m in ((1, before), (2, after), (3, after))] == [False, False, True]
    assert slow.first_alarm == 3 and slow.history_[-1].flagged == (30,)
    again = evaluate_log(slow.frame, min_flagged=1, z_threshold=2.75)  # the rule re-applied to the log says what the monitor said
    assert [(h.memorizing, h.flagged, h.signal) for h in again] == [(h.memorizing, h.flagged, h.signal) for h in slow.history_]


def test_auto_t0_is_fixed_once_and_errors_name_the_fix() -> None:
    before, after, probes, _, train = _point_mass_models()
    mon = MemorizationMonitor(before, probes, train_data=train)
    t0 = mon.t0_
    mon.score(0)
    mon.score(1, after)
    assert (mon.frame.t0 == t0).all()
    with pytest.raises(TypeError, match="sde is required"):
        MemorizationMonitor(TinyNet(), _images(2, 0))
    with pytest.raises(ValueError, match="image_ids"):
        MemorizationMonitor(TinyNet(), _images(2, 0), sde=VPSDE(), t0=0.05, image_ids=[1])
    with pytest.raises(ValueError, match="heldout"):
        MemorizationMonitor(TinyNet(), _images(2, 0), sde=VPSDE(), t0=0.05, heldout=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="every"):
        MemorizationMonitor(TinyNet(), _images(2, 0), sde=VPSDE(), t0=0.05, every=0)


def test_stop_training_keeps_the_last_checkpoint_before_the_alarm(tmp_path) -> None:
    from lidmem.diffusion.mlp import MLPScoreNet
    from lidmem.diffusion.training import StopTraining, read_train_state, train_score_model, train_state_path

    seen = []

    def callback(step, net, ema):
        seen.append(step)
        if step == 30:
            raise StopTraining("alarm")
        return f"s{step}"

    torch.manual_seed(0)
    data = torch.randn(64, 2)
    ckpt = tmp_path / "m.safetensors"
    res = train_score_model(MLPScoreNet(2, hidden=16, depth=2), data, VPSDE(), steps=100, batch_size=8, checkpoint=ckpt,
                            checkpoint_every=20, callback=callback, progress=False)
    assert res.stopped_at == 30 and seen == list(range(1, 31))
    assert read_train_state(train_state_path(ckpt), torch.device("cpu"))["step"] == 20


def test_lidmem_train_monitor_writes_log_and_figure(tmp_path) -> None:
    from typer.testing import CliRunner

    from lidmem.cli.main import app

    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(app, ["train", "--data", "digits", "--out", str(out), "--steps", "20", "--batch-size", "8", "--channels", "8,16",
                                 "--monitor-every", "10", "--monitor-probes", "16", "--grid", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "m.monitor.parquet")
    assert tuple(df.columns) == LOG_COLUMNS and sorted(df.step.unique()) == [10, 20] and len(df) == 32
    assert (df.split == "train").all() and df.image_id.nunique() == 16
    assert (tmp_path / "m.monitor.png").stat().st_size > 1000
    assert "monitor: 2 steps scored" in r.output
    bad = CliRunner().invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "n.safetensors"), "--stop-when-memorizing"])
    assert bad.exit_code == 2 and "--monitor-every" in bad.output


def test_docs_diffusers_loop_example_runs(tmp_path) -> None:
    """docs/monitor.md's UNet2DModel + DDPMScheduler loop, as written, with STEPS and LOG set here."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "monitor.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    scope: dict = {"STEPS": 20, "LOG": str(tmp_path / "monitor.parquet")}
    exec(compile(code, "docs/monitor.md", "exec"), scope)
    df = pd.read_parquet(tmp_path / "monitor.parquet")
    assert sorted(df.step.unique()) == [10, 20] and len(df) == 2 * 64
    assert df.lid.notna().all() and set(df.split) == {"train", "heldout"}
    assert scope["unet"].training  # the loop's model is still in training mode


def test_train_image_model_runs_a_user_callback_after_the_monitor(tmp_path) -> None:
    from lidmem.data.images import load_digits_images
    from lidmem.workflows.train import monitor_log_path, train_image_model

    images = load_digits_images()[0][:40].astype(np.float32)
    seen: list[tuple[int, int]] = []

    def cb(step, net, ema):
        if step % 5 == 0:
            log = monitor_log_path(tmp_path / "m.safetensors")
            seen.append((step, int(pd.read_parquet(log).step.max()) if log.is_file() else -1))
        return None

    train_image_model(images, tmp_path / "m.safetensors", steps=10, batch_size=8, block_out_channels=(8, 16), progress=False,
                      monitor_every=5, monitor_probes=8, callback=cb)
    assert seen == [(5, 5), (10, 10)]  # called every step, after the monitor scored that step
    with pytest.raises(TypeError, match="callback"):
        train_image_model(images, tmp_path / "n.safetensors", steps=2, callback="no")


def test_probe_images_take_every_duplicated_image_first() -> None:
    from lidmem.monitor import choose_probe_images

    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 1, 4, 4)).astype(np.float32)
    dup = [3, 17, 41]
    images = np.concatenate([base, np.repeat(base[dup], [4, 2, 9], axis=0)])  # 41 most copied, then 3, then 17
    ids = choose_probe_images(images, 10, seed=1)
    assert len(ids) == 10 and set(dup) <= set(ids.tolist()) and list(ids) == sorted(ids)
    assert len({images[i].tobytes() for i in ids}) == 10  # distinct images, first rows
    assert np.array_equal(ids, choose_probe_images(images, 10, seed=1))
    assert not np.array_equal(ids, choose_probe_images(images, 10, seed=2))  # the rest is drawn under the seed
    assert choose_probe_images(images, 2, seed=0).tolist() == [3, 41]  # more duplicated images than places: most copied
    assert len(choose_probe_images(images, 500)) == 50
    with pytest.raises(ValueError, match="n"):
        choose_probe_images(images, 0)


def test_lidmem_train_monitor_flag_uses_the_default_interval(tmp_path) -> None:
    from typer.testing import CliRunner

    from lidmem.cli.main import app
    from lidmem.monitor import DEFAULT_EVERY

    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(app, ["train", "--data", "digits", "--out", str(out), "--steps", str(DEFAULT_EVERY), "--batch-size", "4",
                                 "--channels", "8,16", "--monitor", "--monitor-probes", "8", "--grid", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert sorted(pd.read_parquet(tmp_path / "m.monitor.parquet").step.unique()) == [DEFAULT_EVERY]
