"""lidmem.monitor's alarm rule on synthetic LID logs: a planted low-LID group raises the alarm
at the step it appears (one scored step later with persistence 2), a group that falls without
leaving the crowd raises it by the fall test, and on pure noise the alarm fires no more often
than :func:`lidmem.monitor.false_alarm_bound` states."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lidmem.monitor import DEFAULT_RULE, DEFAULT_WINDOW, alarm_trace, evaluate_log, fall_scores, false_alarm_bound


def _log(lid: np.ndarray, heldout: np.ndarray | None = None, every: int = 50) -> pd.DataFrame:
    """A monitor log (the columns evaluate_log reads) from lid of shape (k steps, n probes)."""
    frames = []
    for split, arr in (("train", lid), ("heldout", heldout)):
        if arr is None:
            continue
        k, n = arr.shape
        frames.append(pd.DataFrame({"step": np.repeat(np.arange(1, k + 1) * every, n), "image_id": np.tile(np.arange(n), k),
                                    "split": split, "lid": arr.ravel(), "seconds": 0.1}))
    return pd.concat(frames, ignore_index=True)


def _noise(seed: int, k: int, n: int, level_seed: int = 0) -> np.ndarray:
    """LID-like values: one level per step (training moves them all, the same for every split:
    ``level_seed``) plus independent noise (``seed``)."""
    level = np.random.default_rng(level_seed).normal(0, 3, (k, 1))
    return 10.0 + level + 2.0 * np.random.default_rng(seed).standard_normal((k, n))


# persistence 1 with the level test alone (window=0): with 64 held-out probes the MAD of their
# changes is itself noisy enough that single-step fall scores below -3.5 occur on pure noise
@pytest.mark.parametrize("rule", [{"persistence": 1, "z_threshold": 3.5, "min_flagged": 3, "window": 0}, {}])
@pytest.mark.parametrize("heldout", [False, True])
def test_a_planted_low_lid_group_raises_the_alarm_when_it_appears(rule: dict, heldout: bool) -> None:
    persistence = rule.get("persistence", DEFAULT_RULE["persistence"])
    k, n, start = 12, 256, 7
    lid = _noise(0, k, n)
    group = np.arange(5) * 37
    lid[start:, group] -= 14.0  # far below the others (z about -7) from the 8th scored step on
    ho = _noise(1, k, 64) if heldout else None
    steps = evaluate_log(_log(lid, ho), **rule)
    first = next(h.step for h in steps if h.memorizing)
    assert first == (start + persistence) * 50
    alarm = next(h for h in steps if h.memorizing)
    assert set(alarm.flagged) == set(group.tolist()) and alarm.n_flagged == 5
    assert all(h.memorizing for h in steps if h.step >= first)
    if heldout:
        assert alarm.auroc > 0.5 and alarm.signal == pytest.approx(5 / n, abs=1 / 64)


@pytest.mark.parametrize("heldout", [False, True])
def test_a_group_that_falls_inside_the_crowd_raises_the_alarm_by_the_fall_test(heldout: bool) -> None:
    """The photo-tile case: images whose LID_theta starts high (complex images) and falls to the
    middle of the others. Their level is never low, so the level test alone stays silent; their
    change over two scored steps is (z about -5)."""
    k, n, start = 12, 256, 7
    lid = _noise(0, k, n)
    group = np.arange(5) * 37
    lid[:, group] += 14.0  # far above the others (complex images) ...
    lid[start:, group] -= 14.0  # ... then they fall to the median (a change of -14 against changes of sd 2.8)
    ho = _noise(1, k, 64) if heldout else None
    assert not any(h.memorizing for h in evaluate_log(_log(lid, ho), window=0))
    steps = evaluate_log(_log(lid, ho))
    alarm = next(h for h in steps if h.memorizing)
    assert alarm.step == (start + 2) * 50 and set(alarm.flagged) == set(group.tolist())  # the falls at the 8th and 9th steps
    ft, _ = fall_scores(lid, ho, window=DEFAULT_WINDOW)
    assert np.isnan(ft[:DEFAULT_WINDOW]).all() and (ft[start, group] < -3).all() and (ft[start + 1, group] < -3).all()
    # two windows later the group is steady again: no fall, no flag (its level is ordinary)
    assert not steps[start + 3].memorizing


@pytest.mark.parametrize(("n", "rule"), [
    (64, {"z_threshold": 2.0, "persistence": 1, "min_flagged": 3}),
    (256, {"z_threshold": 1.5, "persistence": 2, "min_flagged": 3}),
    (256, DEFAULT_RULE),
])
def test_false_alarm_rate_on_pure_noise_is_within_the_stated_bound(n: int, rule: dict) -> None:
    rule = {k: v for k, v in rule.items() if k != "threshold"}
    bound = false_alarm_bound(n, **rule, window=0)
    # 40 runs x 50 scored steps of pure noise: the rate per scored step, steps before the
    # persistence window is full left out
    alarms = total = 0
    for seed in range(40):
        lid = _noise(100 + seed, 50, n, level_seed=seed)
        z = (lid - np.median(lid, axis=1, keepdims=True)) / (1.4826 * np.median(np.abs(lid - np.median(lid, axis=1, keepdims=True)), axis=1, keepdims=True))
        mem = alarm_trace(z, **rule)["memorizing"][rule["persistence"] - 1:]
        alarms += int(mem.sum())
        total += len(mem)
    rate = alarms / total
    se = np.sqrt(bound * (1 - bound) / total)
    # the bound accounts for the median and MAD estimated from the n probes (a normal approximation)
    assert rate <= 1.1 * bound + 3 * se + 1e-9, (rate, bound)
    if bound > 0.01:
        assert rate >= 0.75 * bound - 3 * se, (rate, bound)  # the bound is not vacuous either
    if rule.get("z_threshold") == DEFAULT_RULE["z_threshold"]:
        assert bound < 1e-5 and alarms == 0


def test_false_alarm_rate_of_level_and_fall_tests_on_pure_noise_is_within_the_bound() -> None:
    """Both tests together (fall_scores on the same noise, a window of 2) at a loose threshold, so
    that the rate is large enough to compare with the bound."""
    rule = {"z_threshold": 1.5, "fall_threshold": 1.75, "persistence": 2, "min_flagged": 3}
    bound = false_alarm_bound(256, **rule)
    assert bound > false_alarm_bound(256, **rule, window=0)
    alarms = total = 0
    for seed in range(40):
        lid = _noise(300 + seed, 50, 256, level_seed=seed)
        z = (lid - np.median(lid, axis=1, keepdims=True)) / (1.4826 * np.median(np.abs(lid - np.median(lid, axis=1, keepdims=True)), axis=1, keepdims=True))
        fall, _ = fall_scores(lid)
        mem = alarm_trace(z, fall_train=fall, **rule)["memorizing"][DEFAULT_WINDOW + 1:]  # both tests' persistence windows full
        alarms += int(mem.sum())
        total += len(mem)
    rate, se = alarms / total, np.sqrt(bound * (1 - bound) / total)
    assert 0.75 * bound - 3 * se <= rate <= 1.1 * bound + 3 * se, (rate, bound)


def test_false_alarm_bound_matches_the_binomial_and_errors_name_the_argument() -> None:
    from scipy.stats import binom, norm

    c = 2.5 / np.sqrt(1 + (np.pi / 2 + 1.36 * 2.5**2) / 256)
    q = norm.cdf(-c) ** 2
    assert false_alarm_bound(256, window=0) == pytest.approx(binom.sf(2, 256, q))  # the level test alone: 3 flagged, z < -2.5
    c_f = 3.0 / np.sqrt(1 + (np.pi / 2 + 1.36 * 3.0**2) / 256)
    assert false_alarm_bound(256) == pytest.approx(binom.sf(2, 256, 1 - (1 - q) * (1 - norm.cdf(-c_f) ** 2)))  # the defaults: level or fall
    assert false_alarm_bound(256, window=0) < false_alarm_bound(256) < 1e-6
    assert false_alarm_bound(256, persistence=1) > 1000 * false_alarm_bound(256)
    with pytest.raises(ValueError, match="z_threshold"):
        false_alarm_bound(10, z_threshold=-1.0)
    with pytest.raises(ValueError, match="persistence"):
        alarm_trace(np.zeros((2, 3)), persistence=0)
    with pytest.raises(ValueError, match="z_train"):
        alarm_trace(np.zeros(3))
    with pytest.raises(ValueError, match="missing columns"):
        evaluate_log(pd.DataFrame({"step": [1]}))
    with pytest.raises(ValueError, match="window"):
        fall_scores(np.zeros((3, 2)), window=-1)
    with pytest.raises(ValueError, match="fall_train"):
        alarm_trace(np.zeros((2, 3)), fall_train=np.zeros((2, 4)))


def test_defaults_are_the_measured_ones() -> None:
    """docs/monitor.md measures the rule and the cost with these defaults (benchmarks/monitor_planted.py):
    every function of the rule and the monitor must share them, and the monitor's FLIPD work per
    training step must stay within the cost budget (Hutchinson rows per step of a batch-64 run)."""
    import inspect

    from lidmem.monitor import DEFAULT_EVERY, DEFAULT_HUTCHINSON, DEFAULT_PROBE_IMAGES, MemorizationMonitor
    from lidmem.workflows.train import train_image_model

    assert DEFAULT_RULE == {"z_threshold": 2.5, "fall_threshold": 3.0, "persistence": 2, "min_flagged": 3, "threshold": 0.0}
    for fn in (alarm_trace, evaluate_log, MemorizationMonitor.__init__, false_alarm_bound):
        params = inspect.signature(fn).parameters
        for k, v in DEFAULT_RULE.items():
            if k in params:
                assert params[k].default == v, (fn.__name__, k)
    init = inspect.signature(MemorizationMonitor.__init__).parameters
    assert init["every"].default == DEFAULT_EVERY == 100 and init["n_probes"].default == DEFAULT_HUTCHINSON == 2
    assert DEFAULT_PROBE_IMAGES == 256 and inspect.signature(train_image_model).parameters["monitor_probes"].default is None
    # measured (docs/monitor.md): with 4 Hutchinson probes (0.16 JVP rows per training row at batch 64)
    # the scoring cost 8.5-10% of training on the digits UNet and 18% on the photo16 one; with 2 (0.08) about half
    assert DEFAULT_PROBE_IMAGES * DEFAULT_HUTCHINSON / DEFAULT_EVERY / 64 <= 0.08
