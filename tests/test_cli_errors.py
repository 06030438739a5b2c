"""Errors name what the user typed (issue 24): CLI options instead of library keywords, files and
fields instead of decoder messages, one ``error:`` line with no library warnings before it.

Each row of the issue's table is a case of ``test_error_names_what_the_user_typed``;
``test_every_option_named_in_its_error`` walks every command's parameters (click introspection of
the typer app) and checks that one bad value of each gives a message naming that option, before any
model is loaded. Inputs and the model guards are shared with ``test_bad_inputs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer

from test_bad_inputs import (  # noqa: F401  (inputs, no_model_calls: fixtures used by name)
    DIGITS_UNET, T2I, VONMISES, ModelCalled, _forbidden, _outs, app, inputs, no_model_calls, runner,
)

@pytest.fixture(scope="module")
def named_inputs(inputs):
    """Inputs of the issue-24 table, next to the module's other bad inputs."""
    import shutil

    from safetensors.torch import save_file

    d = inputs["dir"] / "named"
    d.mkdir(exist_ok=True)
    f = dict(inputs)
    g = np.random.default_rng(1)
    f["train24"] = d / "train24.npy"
    np.save(f["train24"], g.uniform(-1, 1, size=(24, 1, 8, 8)).astype(np.float32))
    f["complex"] = d / "complex.npy"
    np.save(f["complex"], g.normal(size=(30, 2)) + 1j * g.normal(size=(30, 2)))
    f["dups"] = d / "dups.npy"
    np.save(f["dups"], np.ones((30, 2)))
    f["binary_bin"] = d / "binary.bin"
    f["binary_bin"].write_bytes(bytes([0xB9, 0xFF, 0x00, 0x12]) * 10)
    f["binary_txt"] = d / "binary.txt"
    f["binary_txt"].write_bytes(bytes([0xB9, 0xFF, 0x00, 0x12]) * 10)
    f["bad_meta"] = d / "badmeta.safetensors"
    save_file({"w": torch.zeros(2)}, str(f["bad_meta"]), metadata={"lidmem": "{not json"})
    f["empty_out"] = d / "empty_out"
    f["empty_out"].mkdir()
    f["bad_sched"] = d / "t2i_badsched"
    shutil.copytree(T2I, f["bad_sched"])
    cfg = f["bad_sched"] / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "_class_name": "NoSuchScheduler"}))
    return f


def _named_rows(f: dict[str, Path]) -> list[tuple[str, list[str], tuple[str, ...], bool]]:
    """(id, argv, texts the one error line must contain, model loading allowed): one row per row
    of issue 24's table."""
    new = str(_outs(f["dir"])["new"])
    unet, vm = str(DIGITS_UNET), str(VONMISES)
    imgs = str(f["good_imgs"])
    png = ["score", "--data", imgs, "--out", new, "--metrics", "png_complexity", "--no-progress"]
    return [
        ("audit --lpca-k > n_train - 1", ["audit", "--model", unet, "--train", str(f["train24"]), "--out", new, "--lpca-k", "500"],
         ("--lpca-k=500", "23"), True),
        ("audit --lpca-k 100 on a small set", ["audit", "--model", unet, "--train", str(f["train24"]), "--out", new, "--lpca-k", "100"],
         ("--lpca-k=100", "23", "train24.npy"), False),  # issue 20 item 7: refused before the model loads (the default adapts)
        ("demo vonmises --k > n - 1", ["demo", "vonmises", "--k", "500", "--out", new, "--no-progress"], ("--k=500", "99"), False),
        ("score --value-range 1,1", png + ["--value-range", "1,1"], ("--value-range",), False),
        ("score --kind zip", png + ["--kind", "zip"], ("--kind='zip'",), False),
        ("score --mode CMYK", png + ["--mode", "CMYK"], ("--mode='CMYK'",), False),
        ("score flipd without --model", ["score", "--data", imgs, "--out", new, "--metrics", "flipd"], ("--model is required",), False),
        ("t2i mitigate --ks 0", ["t2i", "mitigate", "--model", str(T2I), "--prompt", "a cat", "--reference", str(f["ref_png"]), "--out", new,
                                 "--ks", "0"], ("--ks",), False),
        ("inspect: metadata is not JSON", ["inspect", str(f["bad_meta"])], ("badmeta.safetensors", "metadata field 'lidmem'", "not valid JSON"), True),
        ("mmh --model: metadata is not JSON", ["mmh", "--model", str(f["bad_meta"]), "--data", str(f["csv"]), "--out", new, "--k", "5"],
         ("badmeta.safetensors", "metadata field 'lidmem'"), True),
        ("audit --duplicates not UTF-8", ["audit", "--model", unet, "--train", str(f["train_ok"]), "--out", new, "--duplicates", str(f["binary_bin"])],
         ("binary.bin: not UTF-8 text",), False),
        ("t2i detect-prompts --prompts not UTF-8", ["t2i", "detect-prompts", "--model", str(T2I), "--prompts", str(f["binary_txt"]), "--out", new],
         ("binary.txt: not UTF-8 text",), False),
        ("mmh --model os:system", ["mmh", "--model", "os:system", "--data", str(f["csv"]), "--out", new, "--k", "5"],
         ("'os:system'", "a factory takes no arguments and returns"), True),
        ("mmh --data all rows equal", ["mmh", "--model", vm, "--data", str(f["dups"]), "--out", new, "--k", "5", "--no-progress"],
         ("--data has 1 distinct rows",), True),
        ("score --merge on an empty folder", ["score", "--merge", "--out", str(f["empty_out"])], ("--out=", "empty_out", "settings.json"), False),
        ("inspect: unknown scheduler class", ["inspect", str(f["bad_sched"])], ("t2i_badsched", "NoSuchScheduler"), True),
        ("t2i: unknown scheduler class", ["t2i", "score-images", imgs, "--model", str(f["bad_sched"]), "--out", new, "--metrics", "flipd_uncond"],
         ("t2i_badsched", "NoSuchScheduler"), False),
        ("lid complex.npy", ["lid", str(f["complex"]), "--k", "5"], ("complex.npy", "complex128"), False),
        ("t2i score-images: uncached hub id", ["t2i", "score-images", imgs, "--model", "someorg/notcached", "--out", new, "--metrics", "flipd_uncond"],
         ("--model someorg/notcached",), True),
    ]


NAMED_IDS = [r[0] for r in _named_rows({k: Path("/nonexistent") / k for k in (
    "dir", "good_imgs", "train24", "train_ok", "csv", "ref_png", "bad_meta", "binary_bin", "binary_txt", "dups", "empty_out", "bad_sched",
    "complex")})]


@pytest.mark.parametrize("row_id", NAMED_IDS)
def test_error_names_what_the_user_typed(row_id, named_inputs, monkeypatch, request):
    _, argv, needles, may_load = {r[0]: r for r in _named_rows(named_inputs)}[row_id]
    monkeypatch.setattr(torch.nn.Module, "__call__", _forbidden)
    if not may_load:
        request.getfixturevalue("no_model_calls")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(app, argv)
    assert not isinstance(res.exception, ModelCalled), f"{row_id}: a model was loaded or called before the error"
    assert res.exit_code == 2, f"{row_id}: exit {res.exit_code}\nstderr: {res.stderr}\n{res.exception!r}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{row_id}: not one error line: {res.stderr!r}"
    for needle in needles:
        assert needle in lines[0], f"{row_id}: {lines[0]!r} does not name {needle!r}"
    assert "_" + "k=" not in lines[0] and "value_range" not in lines[0] and "codec" not in lines[0]
    assert not _outs(named_inputs["dir"])["new"].exists()


def test_library_warnings_never_precede_the_error_line(named_inputs, monkeypatch):
    """Warnings of diffusers / huggingface_hub while a model loads are held back: a failed load
    prints one ``error:`` line; a successful one still shows them (after the load)."""
    import logging
    import warnings

    from lidmem import models

    def noisy_folder(*args, **kwargs):
        logging.getLogger("diffusers.models.modeling_utils").warning("Defaulting to unsafe serialization")
        warnings.warn("huggingface_hub: a cache warning", UserWarning)
        raise ValueError("unet/ cannot be loaded")

    monkeypatch.setattr(models.loader, "_load_folder", noisy_folder)
    res = runner.invoke(app, ["inspect", str(T2I)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == ["error: unet/ cannot be loaded"], res.stderr

    from lidmem.utils import held_library_warnings

    with pytest.warns(UserWarning, match="kept"):
        with held_library_warnings():
            warnings.warn("kept", UserWarning)


def _leaf_commands(cmd, prefix: tuple[str, ...] = ()):
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield prefix, cmd
        return
    for name, sub in subs.items():
        yield from _leaf_commands(sub, prefix + (name,))


def _walker_bases(f: dict[str, Path]) -> dict[str, list[str]]:
    """A valid command line of every command, to which one bad option is appended."""
    new = str(_outs(f["dir"])["new"])
    t2i = ["--model", str(T2I), "--out", new]
    return {
        "lid": [str(f["csv"]), "--k", "5", "--no-progress"],
        "mmh": ["--model", str(VONMISES), "--data", str(f["csv"]), "--out", new, "--k", "5", "--no-progress"],
        "audit": ["--model", str(DIGITS_UNET), "--train", str(f["train_ok"]), "--out", new],
        "score": ["--model", str(DIGITS_UNET), "--data", str(f["good_imgs"]), "--out", new, "--no-progress"],
        "inspect": [str(VONMISES)],
        "train": ["--data", str(f["train_ok"]), "--out", str(f["dir"] / "walk_model.safetensors"), "--no-progress"],
        "weights": [],
        "demo vonmises": ["--out", new, "--no-progress"],
        "demo digits": ["--out", new],
        "demo text2image": ["--out", new],
        "t2i score-images": [str(f["good_imgs"]), *t2i, "--metrics", "flipd_uncond", "--no-progress"],
        "t2i detect-prompts": [*t2i, "--prompts", str(f["prompts"]), "--no-progress"],
        "t2i attribute": [*t2i, "--prompt", "a photo of a cat"],
        "t2i mitigate": [*t2i, "--prompt", "a photo of a cat", "--reference", str(f["ref_png"])],
        "benchmark detectors": ["--out", new],
    }


#: (command, parameter) -> bad value, where the type's default bad value (int: -1, float: nan)
#: does not apply. The message must name the option.
WALK_BAD = {
    "*:out": "{file}",
    "*:device": "bogus",
    "*:dtype": "float8",
    "*:fmt": "xlsx",
    "*:images": "{missing}",
    "*:model": "{missing}",
    "*:data": "{missing}",
    "*:train": "{missing}",
    "*:samples": "{missing}",
    "*:duplicates": "{missing}",
    "*:prompts": "{missing}",
    "*:memorized": "{missing}",
    "*:reference": "{missing}",
    "*:captions": "{missing}",
    "*:metrics": "bogus",
    "*:metric": "bogus",
    "*:methods": "bogus",
    "*:detectors": "bogus",
    "*:trace": "bogus",
    "*:flipd_trace": "bogus",
    "*:search": "bogus",
    "*:estimator": "bogus",
    "*:probe": "bogus",
    "*:precision": "float8",
    "*:tau": "bogus",
    "*:lpca_tau": "bogus",
    "*:radius": "bogus",
    "*:lpca_radius": "bogus",
    "*:t0": "5",
    "*:flipd_t0": "5",
    "*:flipd_sweep": "5",
    "*:nb_threshold": "bogus",
    "*:shape": "1.5,8",
    "*:channels": "1.5,8",
    "*:value_range": "1,1",
    "*:kind": "zip",
    "*:mode": "CMYK",
    "*:bad_images": "bogus",
    "*:ks": "0",
    "*:columns": "nope",
    "*:column": "nope",
    "*:flipd_point": "bogus",
    "*:rewriter": "bogus",
    "*:alignment": "bogus",
    "*:align": "bogus",
    "*:seed": "-1",
    "*:wrt": "bogus",
    "*:alignment_model": "{missing}",
    "*:generic": "{missing}",
    "train:preset": "bogus",
}

#: parameters without an invalid value (free text, flags) or checked under another name.
WALK_EXEMPT = {
    "*:progress": "a flag",
    "*:as_json": "a flag",
    "*:report": "a flag",
    "*:retrain": "a flag",
    "*:resume": "a flag",
    "*:generator": "a flag",
    "*:allow_download": "a flag",
    "*:merge": "a flag",
    "train:stop_when_memorizing": "a flag",
    "train:monitor": "a flag",
    "*:prompt": "free text",
    "*:chat_model": "any name the chat endpoint knows (checked by the endpoint)",
    "*:caption_column": "a column name, checked when the data is read (after --column)",
    "*:id_column": "a column name, checked when the data is read (after --column)",
    "*:flipd_probes": "deprecated alias, its error names --n-probes",
    "*:nb_scores": "deprecated alias, its error names --n-scores",
    **{f"t2i {c}:steps": "deprecated alias, its error names --num-inference-steps" for c in ("score-images", "detect-prompts", "attribute", "mitigate")},
    "*:cos_threshold": "any value in [-1, 1] is valid; nan is checked with the others",
}


def _walk_cases() -> list[tuple[str, str]]:
    root = typer.main.get_command(app)
    return [(" ".join(path), p.name) for path, cmd in _leaf_commands(root) for p in cmd.params if p.name != "help"]


@pytest.mark.parametrize("command,param", _walk_cases())
def test_every_option_named_in_its_error(command, param, inputs, no_model_calls, monkeypatch):
    """Every option of every command, with one bad value: exit 2, one ``error:`` line naming the
    option (or, for a path, the path), and no model loaded or called first."""
    monkeypatch.delenv("LIDMEM_LLM_URL", raising=False)
    root = typer.main.get_command(app)
    cmd = dict((" ".join(p), c) for p, c in _leaf_commands(root))[command]
    p = next(q for q in cmd.params if q.name == param)
    key = next((k for k in (f"{command}:{param}", f"*:{param}") if k in WALK_BAD or k in WALK_EXEMPT), None)
    if key in WALK_EXEMPT:
        pytest.skip(WALK_EXEMPT[key])
    kind = p.bare_type() if callable(getattr(p, "bare_type", None)) else getattr(getattr(p, "type", None), "name", "")
    if kind in ("bool", "boolean") or getattr(p, "is_flag", False):
        pytest.fail(f"{command} {p.opts}: a flag without a WALK_EXEMPT entry")
    if key is not None:
        bad = WALK_BAD[key]
    elif kind in ("int", "integer"):
        bad = "-1"
    elif kind == "float":
        bad = "nan"
    else:
        pytest.fail(f"lidmem {command} {p.opts}: give it a bad value in WALK_BAD or a reason in WALK_EXEMPT")
    missing = inputs["dir"] / "walk_missing.npy"
    bad = bad.format(file=inputs["a_file"], missing=missing)
    base = _walker_bases(inputs)[command]
    opt = next((o for o in p.opts if o.startswith("--")), p.name.upper())
    if p.param_type_name == "argument":
        argv = [bad if a == base[0] else a for a in base]
        needles = [Path(bad).name]
    else:
        argv = [*base, opt, bad]
        needles = [o for o in p.opts if o.startswith("--")]
    if WALK_BAD.get(key) in ("{missing}", "{file}"):
        needles.append(Path(bad).name)  # a path error may name the path the user typed instead
    res = runner.invoke(app, [*command.split(), *argv])
    assert not isinstance(res.exception, ModelCalled), f"lidmem {command} {argv}: a model was loaded or called before the error"
    assert res.exit_code == 2, f"lidmem {command} {argv}: exit {res.exit_code}\n{res.stderr}\n{res.exception!r}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert any(n in lines[0] for n in needles), f"lidmem {command} {opt} {bad}: {lines[0]!r} names none of {needles}"


def test_library_checks_carry_the_argument_and_the_cli_renames_it():
    """The mechanism itself: every check helper raises an error whose ``.argument`` is the name it
    was given, and :func:`message_naming` respells that name, leaving other words alone."""
    from lidmem import _validation as v
    from lidmem.cli._common import COMMAND_OPTIONS, option_for

    cases = [
        (lambda: v.check_positive_int(0, "lpca_k"), v.ArgumentError),
        (lambda: v.check_positive_int(1.5, "lpca_k"), v.ArgumentTypeError),
        (lambda: v.check_t0(5, "lpca_k"), v.ArgumentError),
        (lambda: v.check_probability(2.0, "lpca_k"), v.ArgumentError),
        (lambda: v.check_choice("zip", "lpca_k", ("a", "b")), v.ArgumentError),
        (lambda: v.check_finite(float("nan"), "lpca_k"), v.ArgumentError),
        (lambda: v.check_int_list("1.5", "lpca_k"), v.ArgumentError),
        (lambda: v.check_device("bogus", "lpca_k"), v.ArgumentError),
        (lambda: v.check_points(np.zeros((3, 2)) + 1j, "lpca_k"), v.ArgumentTypeError),
        (lambda: v.check_points(np.full((3, 2), np.nan), "lpca_k"), v.ArgumentError),
    ]
    for call, cls in cases:
        with pytest.raises(cls) as info:
            call()
        assert info.value.argument == "lpca_k" and v.argument_of(info.value) == "lpca_k"
        assert isinstance(info.value, ValueError if cls is v.ArgumentError else TypeError)  # callers catching ValueError still work
        renamed = v.message_naming(info.value, "--lpca-k")
        assert renamed.startswith("--lpca-k") and "lpca_k" not in renamed, renamed

    exc = v.ArgumentError("k=500 neighbours requested; use k <= 99 (top-k, n_k, x.k, k == 3 stay)", argument="k")
    assert v.message_naming(exc, "--k") == "--k=500 neighbours requested; use --k <= 99 (top-k, n_k, x.k, k == 3 stay)"
    assert v.argument_of(ValueError("value_range=(1, 1) must be ...")) == "value_range"  # the name= convention of older checks
    assert v.argument_of(ValueError("plain message")) is None
    assert option_for("lpca_k") is None  # outside a command there is no option to name
    assert option_for("train", COMMAND_OPTIONS["mmh"]) == "--data" and option_for("--k") is None
