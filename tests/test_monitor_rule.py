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
    # 256 held-out probes: with 64 the reference's median and MAD are noisy enough that the default
    # rule (2 flagged) sees a pair of noise flags at about 4e-3 per scored step (docs/monitor.md),
    # and this seed has one at step 8
    ho = _noise(1, k, 256) if heldout else None
    steps = evaluate_log(_log(lid, ho), **rule)
    first = next(h.step for h in steps if h.memorizing)
    assert first == (start + persistence) * 50
    alarm = next(h for h in steps if h.memorizing)
    assert set(alarm.flagged) == set(group.tolist()) and alarm.n_flagged == 5
    assert all(h.memorizing for h in steps if h.step >= first)
    if heldout:
        assert alarm.auroc > 0.5 and alarm.signal == pytest.approx(5 / n, abs=1 / 256)


@pytest.mark.parametrize("heldout", [False, True])
def test_a_group_that_falls_inside_the_crowd_raises_the_alarm_by_the_fall_test(heldout: bool) -> None:
    """The photo-tile case: images whose LID_theta starts high (complex images) and falls, over two
    scored intervals, to the middle of the others. Their level is never low, so the level test
    alone stays silent; each of their two changes is (z about -5.7)."""
    k, n, start = 12, 256, 7
    lid = _noise(0, k, n)
    group = np.arange(5) * 37
    lid[:, group] += 32.0  # far above the others (complex images) ...
    lid[start, group] -= 16.0  # ... then they fall to the median in two steps of -16 (changes of noise: sd 2.8)
    lid[start + 1:, group] -= 32.0
    ho = _noise(1, k, 256) if heldout else None
    assert not any(h.memorizing for h in evaluate_log(_log(lid, ho), window=0))
    steps = evaluate_log(_log(lid, ho))
    alarm = next(h for h in steps if h.memorizing)
    assert alarm.step == (start + 2) * 50 and set(alarm.flagged) == set(group.tolist())  # the falls at the 8th and 9th steps
    ft, _ = fall_scores(lid, ho, window=DEFAULT_WINDOW)
    assert np.isnan(ft[:DEFAULT_WINDOW]).all() and (ft[start, group] < -3).all() and (ft[start + 1, group] < -3).all()
    # a step later the group is steady again: no fall, no flag (its level is ordinary)
    assert not steps[start + 2].memorizing


@pytest.mark.parametrize("heldout", [False, True])
def test_a_one_off_dip_is_not_flagged_by_the_fall_test(heldout: bool) -> None:
    """An estimate that dips at one scored step and comes back: a large fall, then a large rise.
    The fall test's persistence asks for two consecutive falls, so no flag; the same group falling
    at two consecutive steps is flagged."""
    k, n, start = 12, 256, 7
    lid = _noise(0, k, n)
    group = np.arange(5) * 37
    lid[:, group] += 32.0
    dip = lid.copy()
    dip[start, group] -= 20.0  # one scored step only
    ho = _noise(1, k, 256) if heldout else None
    ft, _ = fall_scores(dip, ho)
    assert (ft[start, group] < -5).all() and (ft[start + 1, group] > 5).all()
    assert not any(h.memorizing for h in evaluate_log(_log(dip, ho)))
    fall = lid.copy()
    fall[start, group] -= 16.0
    fall[start + 1:, group] -= 32.0
    assert [h.step for h in evaluate_log(_log(fall, ho)) if h.memorizing][:1] == [(start + 2) * 50]


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
        assert bound < 1e-4 and alarms == 0


@pytest.mark.parametrize("window", [2, DEFAULT_WINDOW])
def test_false_alarm_rate_of_level_and_fall_tests_on_pure_noise_is_within_the_bound(window: int) -> None:
    """Both tests together (fall_scores on the same noise) at a loose threshold, so that the rate is
    large enough to compare with the bound. A window of 2: changes at consecutive steps share no
    value, the bound's independence holds and it is tight. A window of 1 (the default): consecutive
    changes share one value with opposite signs (correlation -0.5 on this noise), two falls in a row
    are rarer than independent ones, and the bound is conservative."""
    rule = {"z_threshold": 1.5, "fall_threshold": 1.75, "persistence": 2, "min_flagged": 3}
    bound = false_alarm_bound(256, **rule, window=window)
    assert bound > false_alarm_bound(256, **rule, window=0)
    alarms = total = 0
    for seed in range(40):
        lid = _noise(300 + seed, 50, 256, level_seed=seed)
        z = (lid - np.median(lid, axis=1, keepdims=True)) / (1.4826 * np.median(np.abs(lid - np.median(lid, axis=1, keepdims=True)), axis=1, keepdims=True))
        fall, _ = fall_scores(lid, window=window)
        mem = alarm_trace(z, fall_train=fall, **rule)["memorizing"][window + 1:]  # both tests' persistence windows full
        alarms += int(mem.sum())
        total += len(mem)
    rate, se = alarms / total, np.sqrt(bound * (1 - bound) / total)
    assert rate <= 1.1 * bound + 3 * se, (rate, bound)
    if window == 2:
        assert rate >= 0.75 * bound - 3 * se, (rate, bound)
    else:
        level_only = false_alarm_bound(256, **rule, window=0)
        assert level_only < rate < 0.75 * bound, (rate, bound)


def test_false_alarm_bound_matches_the_binomial_and_errors_name_the_argument() -> None:
    from scipy.stats import binom, norm

    c = 2.5 / np.sqrt(1 + (np.pi / 2 + 1.36 * 2.5**2) / 256)
    q = norm.cdf(-c) ** 2
    assert false_alarm_bound(256, window=0) == pytest.approx(binom.sf(1, 256, q))  # the level test alone: 2 flagged, z < -2.5
    assert false_alarm_bound(256, window=0, min_flagged=3) == pytest.approx(binom.sf(2, 256, q))
    # the defaults: level or fall, both at 2.5
    assert false_alarm_bound(256) == pytest.approx(binom.sf(1, 256, 1 - (1 - q) ** 2))
    assert false_alarm_bound(256, window=0) < false_alarm_bound(256) < 5e-4
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

    assert DEFAULT_RULE == {"z_threshold": 2.5, "fall_threshold": 2.5, "persistence": 2, "min_flagged": 2, "threshold": 0.0}
    assert DEFAULT_WINDOW == 1
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
