"""Mitigation: token sampling, the Box 1 offline rewriter changes only the sampled tokens, RTA,
the chat rewriter's request (never sent), A^FLIPD embedding optimisation, evaluation table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lidmem.text2image import (
    ChatRewriter,
    RuleRewriter,
    TextToImageModel,
    TokenAttribution,
    evaluate_mitigation,
    optimize_prompt_embedding,
    pixel_cosine,
    random_token_addition,
    rewrite_prompt,
    select_tokens,
)
from lidmem.text2image.attribution import merge_pieces, prompt_tokens
from lidmem.text2image.mitigation import DEFAULT_SYNONYMS
from lidmem.text2image.testing import tiny_components


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return TextToImageModel(**tiny_components(seed=0, latent=False))


def _attribution(model, prompt, scores=None):
    positions, tokens, ids = prompt_tokens(model, prompt)
    words, wot = merge_pieces(model.tokenizer, tokens, ids)
    s = np.full(len(tokens), 1.0 / len(tokens)) if scores is None else np.asarray(scores, float)
    ws = np.zeros(len(words))
    np.add.at(ws, np.asarray(wot), s)
    return TokenAttribution(prompt, "a_cfg", tokens, positions, s, words, wot, ws)


def test_select_tokens_follows_attributions():
    p = [0.94, 0.02, 0.02, 0.02]
    picks = [select_tokens(p, 1, seed=s)[0] for s in range(300)]
    uniform = [select_tokens(p, 1, method="uniform", seed=s)[0] for s in range(300)]
    assert np.mean(np.array(picks) == 0) > 0.88
    assert 0.15 < np.mean(np.array(uniform) == 0) < 0.35
    two = select_tokens(p, 3, seed=0)
    assert len(set(two)) == 3  # without replacement
    # zero-attribution tokens are only drawn once the others are exhausted
    assert set(select_tokens([0.5, 0.5, 0.0, 0.0], 2, seed=1)) == {0, 1}
    assert sorted(select_tokens([0.5, 0.5, 0.0, 0.0], 4, seed=1)) == [0, 1, 2, 3]
    assert select_tokens(p, 2, seed=5) == select_tokens(p, 2, seed=5)
    with pytest.raises(ValueError, match="k=5 exceeds"):
        select_tokens(p, 5)
    with pytest.raises(ValueError, match="non-negative"):
        select_tokens([0.5, -0.1], 1)


def test_rewriter_changes_only_the_sampled_tokens(tiny):
    prompt = "a red cat and the blue dog on the house"
    a = _attribution(tiny, prompt)
    assert a.words == prompt.split()
    syn = {w: (w.upper() + "x",) for w in prompt.split()}
    rw = RuleRewriter(synonyms=syn)
    for seed in range(5):
        idx = select_tokens(a, 3, method="uniform", seed=seed)
        new = rewrite_prompt(a, idx, rw, seed=seed).split()
        chosen = {a.word_of_token[i] for i in idx}
        assert len(new) == len(a.words)
        for j, (old, w) in enumerate(zip(a.words, new)):
            assert (w != old) == (j in chosen), (seed, j, old, w)
    # a multi-piece word ("car" = ca + r</w>) is rewritten as one word
    b = _attribution(tiny, "a car")
    assert b.tokens == ["a</w>", "ca", "r</w>"]
    assert rewrite_prompt(b, [2], RuleRewriter(), seed=0) in ("a automobile", "a vehicle")


def test_rule_rewriter_box1_rules():
    rw = RuleRewriter(synonyms={"house": ("home",)})
    rng = np.random.default_rng(0)
    assert rw.replacement(",", first=False, rng=rng) == ""  # punctuation goes
    for _ in range(20):
        n = int(rw.replacement("12", first=False, rng=rng))  # numbers move slightly
        assert n != 12 and abs(n - 12) <= 2
    assert rw.replacement("0", first=False, rng=rng) in ("1", "2")
    assert rw.replacement("Paris", first=False, rng=rng) == "Paris"  # names stay
    assert rw.replacement("seven", first=False, rng=rng) == "seven"  # kept words
    assert rw.replacement("house", first=False, rng=rng) == "home"
    assert rw.replacement("House", first=True, rng=rng) == "Home"
    assert rw.replacement("zqx", first=False, rng=rng) == ""  # no known meaning: dropped
    text = rw.rewrite("the house near Paris, 12 zqx", ["the", "house", "near", "paris", ",", "12", "zqx"], [1, 3, 4, 6], seed=0)
    assert text == "the home near Paris 12"


def test_random_token_addition_keeps_prompt_and_adds_k(tiny):
    prompt = "a red cat on the house"
    for k in (1, 3, 6):
        new = random_token_addition(tiny, prompt, k, seed=k).split(" ")
        assert len(new) == len(prompt.split()) + k
        it = iter(new)
        assert all(w in it for w in prompt.split())  # original words kept, in order
    assert random_token_addition(tiny, prompt, 2, seed=3) == random_token_addition(tiny, prompt, 2, seed=3)


def test_chat_rewriter_request_is_box1_and_needs_env(monkeypatch):
    rw = ChatRewriter("some-model", url_env="LIDMEM_TEST_URL", key_env="LIDMEM_TEST_KEY")
    monkeypatch.delenv("LIDMEM_TEST_URL", raising=False)
    with pytest.raises(ValueError, match="LIDMEM_TEST_URL"):
        rw.request("a red cat", ["a", "red", "cat"], [2])
    monkeypatch.setenv("LIDMEM_TEST_URL", "http://localhost:1/v1/")
    monkeypatch.setenv("LIDMEM_TEST_KEY", "k123")
    url, body, headers = rw.request("a red cat", ["a", "red", "cat"], [2])
    assert url == "http://localhost:1/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k123"
    msg = json.loads(body)["messages"][0]["content"]
    assert "perturb the following tokens: ['cat']" in msg and "should not be replaced" in msg
    assert json.loads(body)["model"] == "some-model"


def test_optimize_prompt_embedding_first_step_is_adam_ascent_of_a_flipd():
    """One Adam step moves every coordinate of c by lr * sign(dA/dc) (Adam's first step), where
    A(c) is A^FLIPD with the states of the starting embedding held fixed; dA/dc is checked
    against a central difference of A (float64 model)."""
    from lidmem.text2image import cfg_flipd_at

    model = TextToImageModel(**tiny_components(seed=0, latent=False)).double()
    lr, lam = 1e-3, 7.5
    c0 = model.encode_prompt("a red cat")[0].float().double()  # the optimiser holds c in float32
    emb, hist = optimize_prompt_embedding(model, "a red cat", steps=1, lr=lr, num_inference_steps=10, guidance_scale=lam, seed=0)
    assert emb.shape == (1, 16, 32) and list(hist.step) == [0, 1]
    uncond = model.unconditional_embeds(1)
    states = []
    model.sample(c0, uncond, n=1, num_inference_steps=10, guidance_scale=lam, latents=model.initial_noise(1, 0), callback=lambda s: states.append((s["x"], s["t"])))
    used = [(x, t) for x, t in states if 0.01 <= t <= 0.2]
    assert len(used) == 1

    def objective(c):
        g = torch.Generator().manual_seed(1)
        return torch.stack([cfg_flipd_at(model, x, t, c, uncond, lam, seed=g, create_graph=True).mean() for x, t in used]).mean()

    c = c0.clone().requires_grad_(True)
    value = objective(c)
    (grad,) = torch.autograd.grad(value, c)
    assert hist.a_flipd.iloc[0] == pytest.approx(float(value.detach()), rel=1e-6)
    u = grad.sign()
    h = 1e-3
    with torch.no_grad():
        fd = (objective(c0 + h * u) - objective(c0 - h * u)) / (2 * h)
    assert float((grad * u).sum()) > 0
    assert float(fd) == pytest.approx(float((grad * u).sum()), rel=1e-3)
    big = grad.abs() > 1e-6
    assert int(big.sum()) > 100
    # (Adam: lr * g / (|g| + 1e-8): within 1% of lr * sign(g) wherever |g| > 1e-6)
    torch.testing.assert_close((emb - c0)[big], lr * u[big], rtol=0, atol=1e-2 * lr)
    assert model.generate(prompt_embeds=emb, num_inference_steps=2).shape == (1, 3, 8, 8)


def test_evaluate_mitigation_table(tiny):
    ref = tiny.generate("a red cat zqx", num_inference_steps=4, seed=0)[0]
    calls = []

    def alignment(images, prompt):
        calls.append(prompt)
        return torch.ones(len(images))

    df = evaluate_mitigation(
        tiny, "a red cat zqx", ref, metric="a_cfg", ks=(1, 8), repeats=2, alignment=alignment, n_generations=1, num_inference_steps=4,
    )
    assert list(df.columns) == ["method", "k", "k_used", "repeat", "prompt", "similarity", "alignment"]
    assert len(df) == 1 + 3 * 2 * 2
    orig = df[df.method == "original"].iloc[0]
    # same noise and prompt as the reference: the generation IS the reference image
    assert orig.similarity == pytest.approx(1.0, abs=1e-5)
    assert set(calls) == {"a red cat zqx"}  # alignment always with the original prompt
    assert (df[(df.method != "rta") & (df.k == 8)].k_used == 4).all()  # 4 tokens in the prompt
    assert (df[df.method == "rta"].prompt.str.split().str.len() == 4 + df[df.method == "rta"].k).all()
    sims = pixel_cosine(torch.stack([ref, -ref]), ref)
    torch.testing.assert_close(sims, torch.tensor([1.0, -1.0]))


def test_rule_rewriter_without_default_table():
    rng = np.random.default_rng(0)
    assert RuleRewriter(synonyms={"cat": ("kitty",)}).replacement("photo", first=False, rng=rng) in DEFAULT_SYNONYMS["photo"]
    only = RuleRewriter(synonyms={"cat": ("kitty",)}, use_default_table=False)
    assert only.replacement("photo", first=False, rng=rng) == ""
    assert only.replacement("cat", first=False, rng=rng) == "kitty"


def test_clip_alignment_from_a_local_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from lidmem.text2image import clip_alignment
    from lidmem.text2image.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": len(tok), "max_position_embeddings": 16, "eos_token_id": 1, "bos_token_id": 0, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    score = clip_alignment(str(tmp_path / "clip"))
    # ground truth: CLIPModel's own logits (logit_scale * cosine) on pixels prepared by
    # transformers' CLIPImageProcessor (OpenAI mean/std); images at CLIP's size need no resizing
    from transformers import CLIPImageProcessor

    clip = CLIPModel.from_pretrained(tmp_path / "clip").eval()
    imgs32 = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    proc = CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_convert_rgb=False)
    pixels = proc([((im + 1) / 2).numpy() for im in imgs32], return_tensors="pt", input_data_format="channels_first").pixel_values
    prompts = ["a red cat", "a blue dog"]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = clip(input_ids=ids, pixel_values=pixels)
    cosine = out.logits_per_image / clip.logit_scale.exp()  # (3 images, 2 prompts)
    for j, p in enumerate(prompts):
        torch.testing.assert_close(score(imgs32, p), cosine[:, j], rtol=1e-4, atol=1e-5)
    assert float((cosine[:, 0] - cosine[:, 1]).abs().max()) > 1e-3  # the prompts are told apart
    # other sizes are resized; grey images are repeated to RGB
    imgs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = score(imgs, "a red cat")
    assert a.shape == (3,) and bool((a.abs() <= 1).all())
    grey = imgs32[:, :1]
    torch.testing.assert_close(score(grey, "a red cat"), score(grey.repeat(1, 3, 1, 1), "a red cat"))
