"""The small text-to-image model: captioned digits with planted memorization, offline tokenizer,
training loop, and the SHIPPED model's planted memorization measured by generation."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch

from lidmem.text2image import toydata


@pytest.fixture(scope="module")
def data():
    return toydata.make_captioned_digits()


@pytest.fixture(scope="module")
def tokenizer(data, tmp_path_factory):
    _, captions = data.expanded()
    return toydata.build_tokenizer(captions, tmp_path_factory.mktemp("tok"))


def _shipped_path():
    return str(resources.files("lidmem") / "weights" / "text2image")


def test_captioned_digits_planted_set(data):
    mem = data.memorized_indices
    assert len(mem) == 16
    # memorized: unique captions with their own trigger word, duplicated 20 times
    mem_caps = [data.captions[i] for i in mem]
    assert len(set(mem_caps)) == 16
    for i in mem:
        assert data.captions[i].split()[-1] == data.triggers[i]
        assert data.weights[i] == 20
        # the caption names the image's true class
        assert toydata.caption_digit(data.captions[i]) == data.labels[i]
    # trigger words occur in no other caption
    others = " ".join(data.captions[i] for i in np.flatnonzero(~data.memorized))
    for trig in toydata.TRIGGER_WORDS:
        assert trig not in others
    # generic captions name the right digit and vary
    plain = np.flatnonzero(~data.memorized)
    assert all(toydata.caption_digit(data.captions[i]) == data.labels[i] for i in plain)
    assert len(set(data.captions[i] for i in plain)) > 500
    images, captions = data.expanded()
    assert images.shape == (1797 - 16 + 16 * 20, 1, 8, 8)
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    # deterministic under the seed, different under another seed
    again = toydata.make_captioned_digits()
    assert again.captions == data.captions
    assert toydata.make_captioned_digits(seed=1).captions != data.captions


def test_tokenizer_is_clip_bpe_with_whole_words(data, tokenizer):
    from transformers import CLIPTokenizer

    assert isinstance(tokenizer, CLIPTokenizer)
    cap = data.captions[data.memorized_indices[0]]
    ids = tokenizer(cap).input_ids
    words = cap.replace(",", " ,").split()
    # BOS + one token per word (commas included) + EOS; ids are distinct tokens, not all the same
    assert len(ids) == len(words) + 2
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(set(ids)) >= len(set(words))
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == [w + "</w>" for w in words]
    # unseen words still tokenize (byte-level BPE fallback), into several pieces
    assert len(tokenizer("qqqzzz").input_ids) > 3


def test_alignment_and_similarity(data):
    align = toydata.DigitAlignment().fit()
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = toydata.digits_to_pixels(digits.data[:300])
    prompts = [f"a digit {toydata.DIGIT_WORDS[y]}" for y in digits.target[:300]]
    wrong = [f"a digit {toydata.DIGIT_WORDS[(y + 1) % 10]}" for y in digits.target[:300]]
    assert np.mean(align.score(x, prompts)) > 0.8
    assert np.mean(align.score(x, wrong)) < 0.1
    assert np.isnan(align.score(x[:1], ["a photo"]))[0]
    ref = data.images[0]
    assert toydata.image_similarity(ref[None], ref)[0] == pytest.approx(1.0)
    same_class = data.images[torch.from_numpy(np.flatnonzero(data.labels == data.labels[0])[1:50])]
    s = toydata.image_similarity(same_class, ref)
    assert 0.2 < float(np.median(s)) < 0.95
    with pytest.raises(ValueError, match="prompts"):
        align.score(x[:2], ["a digit one"])


def test_training_reduces_loss_and_resumes(data, tokenizer, tmp_path):
    from lidmem.text2image.training import save_text2image_folder, train_text2image

    images, captions = data.expanded()
    idx = torch.arange(0, images.shape[0], 20)
    sub_x, sub_c = images[idx], [captions[i] for i in idx.tolist()]

    def components():
        te = toydata.build_text_encoder(tokenizer, hidden_size=32, num_layers=1)
        unet = toydata.build_unet(channels=(8, 16))
        return te, unet

    te, unet = components()
    ckpt = tmp_path / "state.pt"
    kw = dict(tokenizer=tokenizer, scheduler=toydata.build_scheduler(), batch_size=32, seed=3, progress=False)
    full = train_text2image(sub_x, sub_c, unet=unet, text_encoder=te, steps=60, checkpoint=None, **kw)
    assert full.losses[:10].mean() > 1.3 * full.losses[-10:].mean()
    # resumable: 30 steps + resume to 60 equals 60 straight
    te2, unet2 = components()
    train_text2image(sub_x, sub_c, unet=unet2, text_encoder=te2, steps=30, checkpoint=ckpt, **kw)
    te3, unet3 = components()
    resumed = train_text2image(sub_x, sub_c, unet=unet3, text_encoder=te3, steps=60, checkpoint=ckpt, **kw)
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-4, atol=1e-6)
    # frozen text encoder: only the UNet moves
    te4, unet4 = components()
    before = {k: v.clone() for k, v in te4.state_dict().items()}
    frozen = train_text2image(sub_x, sub_c, unet=unet4, text_encoder=te4, steps=5, train_text_encoder=False, **kw)
    for k, v in frozen.text_encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert frozen.info["train_text_encoder"] is False
    save_text2image_folder(tmp_path / "model", unet=full.unet, text_encoder=full.text_encoder, tokenizer=tokenizer,
                           scheduler=kw["scheduler"], extra={"x": 1})
    from lidmem.text2image.loading import load_text2image

    model = load_text2image(tmp_path / "model")
    assert model.sample_shape == (1, 8, 8) and not model.is_latent
    cond, _ = model.encode_prompt(sub_c[:2])
    ref = full.text_encoder(model.tokenize(sub_c[:2]))[0]
    torch.testing.assert_close(cond, ref.detach())


def test_shipped_model_memorizes_planted_images():
    """Memorized (trigger) prompts reproduce their training image; generic prompts give new digits
    of the requested class."""
    from lidmem.text2image.loading import load_text2image

    path = _shipped_path()
    meta = json.loads((resources.files("lidmem") / "weights" / "text2image" / "lidmem.json").read_text())
    model = load_text2image(path)
    data = toydata.make_captioned_digits(**{k: meta["data"][k] for k in ("n_memorized", "n_duplicates", "seed")})
    mem = data.memorized_indices
    assert [data.captions[i] for i in mem] == [m["caption"] for m in meta["memorized"]]
    prompts = [data.captions[i] for i in mem]
    x = model.generate(prompts, n_per_prompt=2, num_inference_steps=20, guidance_scale=3.0, seed=0)
    sims = np.array([toydata.image_similarity(x[2 * j : 2 * j + 2], data.images[i]).mean() for j, i in enumerate(mem)])
    assert np.mean(sims > 0.9) >= 0.8
    generic = toydata.non_memorized_prompts(20)
    y = model.generate(generic, n_per_prompt=2, num_inference_steps=20, guidance_scale=3.0, seed=0)
    align = toydata.DigitAlignment().fit()
    assert np.nanmean(align.score(y, [p for p in generic for _ in range(2)])) > 0.6
    # generic generations are not copies of any training image
    sim_all = torch.stack([torch.as_tensor(toydata.image_similarity(y, im)) for im in data.images]).max(0).values
    assert float(torch.median(sim_all)) < 0.95
