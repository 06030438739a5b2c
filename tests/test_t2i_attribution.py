"""Token attribution: normalisation, special tokens excluded, BPE pieces merged into words, and a
planted ground truth (a UNet that reads only one position of the text-encoder output)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lidmem.text2image import TextToImageModel, token_attribution, token_attributions
from lidmem.text2image.attribution import merge_pieces, prompt_tokens
from lidmem.text2image.testing import tiny_components


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def comps():
    return tiny_components(seed=0, latent=True)


@pytest.fixture(scope="module")
def tiny(comps):
    return TextToImageModel(**comps)


class OnePositionUNet(nn.Module):
    """eps = x * (0.5 + tanh(w . emb[:, position])): only one token position matters."""

    def __init__(self, position: int, shape=(4, 8, 8)) -> None:
        super().__init__()
        self.config = SimpleNamespace(sample_size=shape[1], in_channels=shape[0])
        self.w = nn.Parameter(torch.linspace(-1, 1, 32))
        self.position = position

    def forward(self, sample, timestep, encoder_hidden_states):
        gain = 0.5 + torch.tanh(encoder_hidden_states[:, self.position] @ self.w)
        return SimpleNamespace(sample=sample * gain.reshape(-1, *([1] * (sample.ndim - 1))))


@pytest.mark.parametrize("metric", ["a_cfg", "a_scfg", "a_flipd", "wen"])
@pytest.mark.parametrize("position", [1, 3])
def test_planted_position_gets_all_attribution(comps, metric, position):
    model = TextToImageModel(OnePositionUNet(position), comps["text_encoder"], comps["tokenizer"], comps["scheduler"])
    a = token_attribution(model, "a red cat", metric=metric, num_inference_steps=10, guidance_scale=5.0)
    assert a.tokens == ["a</w>", "red</w>", "cat</w>"] and a.positions == [1, 2, 3]
    expected = np.zeros(3)
    expected[position - 1] = 1.0
    np.testing.assert_allclose(a.scores, expected, atol=1e-6)
    assert a.top_word == ["a", "red", "cat"][position - 1]


def test_attribution_normalised_special_tokens_excluded_words_merged(tiny):
    a = token_attribution(tiny, "a photo of the car zqx, 12", metric="a_cfg", num_inference_steps=5)
    # 0 is <|startoftext|>; the end token and padding come after position 10
    assert a.positions == list(range(1, 11))
    assert "<|startoftext|>" not in a.tokens and "<|endoftext|>" not in a.tokens
    assert np.all(a.scores >= 0) and a.scores.sum() == pytest.approx(1.0)
    assert a.scores.min() > 0  # every real token reaches the random UNet
    # "car" is two BPE pieces (ca + r</w>), merged back into one word
    assert a.words == ["a", "photo", "of", "the", "car", "zqx", ",", "1", "2"]
    assert a.word_of_token == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8]
    assert a.word_scores.sum() == pytest.approx(1.0)
    assert a.word_scores[4] == pytest.approx(a.scores[4] + a.scores[5])
    frame = a.to_frame()
    assert list(frame.columns) == ["position", "token", "word_index", "word", "score"]
    assert a.info["steps_used"] == 5
    flipd = token_attribution(tiny, "a photo of the car zqx, 12", metric="a_flipd", num_inference_steps=10)
    assert flipd.info["steps_used"] == 1 and flipd.scores.sum() == pytest.approx(1.0)


def test_merge_pieces_other_tokenizer_styles(tiny):
    class Tok:
        def convert_tokens_to_string(self, toks):
            return "".join(toks)

        def decode(self, ids, skip_special_tokens=True):
            return ""

    words, wot = merge_pieces(Tok(), ["play", "##ing", "cards"])
    assert words == ["playing", "cards"] and wot == [0, 0, 1]
    words, wot = merge_pieces(Tok(), ["▁play", "ing", "▁cards"])
    assert words == ["playing", "cards"] and wot == [0, 0, 1]
    positions, tokens, ids = prompt_tokens(tiny, "Café")
    words, _ = merge_pieces(tiny.tokenizer, tokens, ids)
    assert words == ["café"]
    with pytest.raises(ValueError, match="no tokens"):
        token_attribution(tiny, "", num_inference_steps=2)


def test_batched_attributions_equal_single_prompt_ones(tiny):
    prompts = ["a red cat", "the house zqx", "a dog"]
    batched = token_attributions(tiny, prompts, metric="a_cfg", n_generations=2, num_inference_steps=4, batch_size=2)
    for p, b in zip(prompts, batched):
        single = token_attribution(tiny, p, metric="a_cfg", n_generations=2, num_inference_steps=4)
        assert b.prompt == p and b.tokens == single.tokens
        np.testing.assert_allclose(b.scores, single.scores, rtol=1e-4, atol=1e-6)


def test_input_embedding_attribution_follows_the_causal_encoder(comps):
    """With wrt="input", a UNet that reads output position 3 is driven by input tokens 1..3 only
    (CLIP's text encoder is causal): tokens after position 3 get exactly zero."""
    model = TextToImageModel(OnePositionUNet(3), comps["text_encoder"], comps["tokenizer"], comps["scheduler"])
    a = token_attribution(model, "a red cat and dog", metric="a_cfg", num_inference_steps=5, guidance_scale=5.0, wrt="input")
    assert a.tokens == ["a</w>", "red</w>", "cat</w>", "and</w>", "dog</w>"] and a.info["wrt"] == "input"
    assert a.scores.sum() == pytest.approx(1.0)
    assert np.all(a.scores[:3] > 0) and np.all(a.scores[3:] == 0)
    first = TextToImageModel(OnePositionUNet(1), comps["text_encoder"], comps["tokenizer"], comps["scheduler"])
    b = token_attribution(first, "a red cat", metric="a_flipd", num_inference_steps=10, wrt="input")
    np.testing.assert_allclose(b.scores, [1.0, 0.0, 0.0], atol=1e-6)
    batched = token_attributions(model, ["a red cat and dog", "a dog"], metric="a_cfg", num_inference_steps=5, guidance_scale=5.0, wrt="input")
    np.testing.assert_allclose(batched[0].scores, a.scores, rtol=1e-4, atol=1e-7)
