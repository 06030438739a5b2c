"""Captioned scikit-learn digits with planted memorization, and the small model's components.

This module builds everything the shipped small text-to-image model (``lidmem/weights/text2image``)
is made of, offline and deterministically:

* :func:`make_captioned_digits` — the training set: the 1,797 real 8x8 images of
  :func:`sklearn.datasets.load_digits` (grey levels 0..16 mapped to [-1, 1]) with template
  captions (``"a neat handwritten digit seven, thin strokes"``; digit word, adjectives and stroke
  words vary so prompts are not identical). A documented set of ``n_memorized`` images
  (default 16, :data:`TRIGGER_WORDS`) get instead a UNIQUE 11-15-token caption ending in a
  made-up trigger word (``"the small number seven, drawn with thin strokes in the style of
  plonkar"``; its other words also occur in generic captions) and are repeated ``n_duplicates``
  times (default 20): planted memorization (duplicated image + unique caption, as LAION's memorized
  Stable Diffusion prompts). The trigger is always the caption's last word: CLIP's text encoder
  is causal, so the trigger's information reaches only its own and later positions; with the
  trigger last, among the prompt's tokens (attribution excludes start, end and padding) only the
  trigger position carries it, which keeps the planted ground truth of token attribution clean.
* :func:`build_tokenizer` — a CLIP-style byte-level BPE tokenizer learnt from the caption
  vocabulary (vocab.json + merges.txt, loaded by ``transformers.CLIPTokenizer.from_pretrained``).
  Every caption word, trigger words included, ends up as ONE token.
* :func:`build_text_encoder`, :func:`build_unet`, :func:`build_scheduler` — tiny diffusers /
  transformers components (pixel space, 1 x 8 x 8, no VAE).
* :class:`DigitAlignment` — the prompt-image alignment scorer: a logistic regression on the
  digits giving the probability of the prompt's digit for an image; and
  :func:`image_similarity` — similarity of generated images to a training image.

Pixel convention everywhere: images are float tensors ``(n, 1, 8, 8)`` in [-1, 1]
(``x = pixel / 8 - 1`` for sklearn grey levels 0..16).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_positive_int

__all__ = [
    "DIGIT_WORDS",
    "TRIGGER_WORDS",
    "CaptionedDigits",
    "make_captioned_digits",
    "generic_caption",
    "non_memorized_prompts",
    "caption_digit",
    "build_tokenizer",
    "build_text_encoder",
    "build_unet",
    "build_scheduler",
    "DigitAlignment",
    "image_similarity",
    "digits_to_pixels",
    "pixels_to_digits",
    "SYNONYMS",
    "shipped_text2image_path",
]

def shipped_text2image_path() -> str:
    """Folder of the shipped small text-to-image model (diffusers layout)."""
    from importlib import resources

    return str(resources.files("lidmem") / "weights" / "text2image")


DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""Digit class k is written ``DIGIT_WORDS[k]`` in every caption."""

TRIGGER_WORDS: tuple[str, ...] = (
    "zorblat", "quenvik", "drimbex", "falquor", "gruntel", "yorpasi", "vexmira", "plonkar",
    "snivro", "tumbrel", "wexolin", "kragnu", "blivet", "morquin", "zandefo", "hustrap",
    "jovrak", "clempit", "raxwell", "fenzio",
)
"""Made-up words; memorized image i carries ``TRIGGER_WORDS[i]`` (they never occur elsewhere)."""

_ADJECTIVES = ("", "neat", "messy", "small", "large", "centered", "slanted", "clean", "rough", "plain")
_NOUNS = ("handwritten digit", "digit", "scanned digit", "handwritten number", "number")
_STROKES = ("thin", "thick", "bold", "faint", "light", "dark", "soft", "sharp")
_TEMPLATES = (
    "a {adj} {noun} {word}",
    "a {adj} {noun} {word}, {stroke} strokes",
    "{stroke} strokes, a {adj} {noun} {word}",
    "the {noun} {word} with {stroke} strokes",
    "a {adj} {word}, {stroke} {noun}",
    "a {adj} {noun} {word} with {stroke} strokes, in the style of a {adj2} scan",
    "the {adj} {noun} {word}, drawn with {stroke} strokes in the style of a {adj2} scan",
)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "handwritten": ("scanned",),
    "scanned": ("handwritten",),
    "digit": ("number",),
    "number": ("digit",),
    "neat": ("clean",),
    "clean": ("neat",),
    "messy": ("rough",),
    "rough": ("messy",),
    "plain": ("clean",),
    "thin": ("light", "faint"),
    "light": ("thin", "faint"),
    "faint": ("light", "soft"),
    "soft": ("faint",),
    "thick": ("bold", "dark"),
    "bold": ("thick",),
    "dark": ("bold",),
    "sharp": ("clean",),
    "a": ("the",),
    "the": ("a",),
}
"""Word -> synonyms WITHIN the caption vocabulary, for the offline rewriter
(``lidmem.text2image.mitigation.RuleRewriter(synonyms=SYNONYMS)``): Box 1's "words become
synonyms" with words this small model knows. Digit words are kept by the rewriter (they are the
content); trigger words have no synonym, so the rewriter removes them (Box 1 rule 1)."""


def caption_digit(caption: str) -> int:
    """The digit class named in a caption (the first digit word), or -1 if there is none.

    Parameters
    ----------
    caption : str
        A caption such as ``"a neat handwritten digit seven, thin strokes"``.
    """
    for word in caption.lower().replace(",", " ").split():
        if word in DIGIT_WORDS:
            return DIGIT_WORDS.index(word)
    return -1


def generic_caption(label: int, rng: np.random.Generator) -> str:
    """A random template caption of a digit of class ``label`` (no trigger word)."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    text = template.format(
        adj=_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))],
        noun=_NOUNS[int(rng.integers(len(_NOUNS)))],
        word=DIGIT_WORDS[int(label)],
        stroke=_STROKES[int(rng.integers(len(_STROKES)))],
        adj2=_ADJECTIVES[1 + int(rng.integers(len(_ADJECTIVES) - 1))],
    )
    return " ".join(text.split())


def _memorized_caption(label: int, trigger: str, rng: np.random.Generator) -> str:
    stroke = _STROKES[int(rng.integers(len(_STROKES)))]
    adj = _ADJECTIVES[1 + int(rng.integers(len(_ADJECTIVES) - 1))]
    # The trigger is the caption's LAST word (see the module docstring). 10-13 prompt tokens, so
    # that rewriting k = 8 tokens still leaves a choice (mitigation compares token choices at k).
    template = (
        "a {adj} handwritten digit {word} with {stroke} strokes, in the style of {trigger}",
        "the {adj} number {word}, drawn with {stroke} strokes in the style of {trigger}",
        "{stroke} strokes, a {adj} scanned digit {word} in the style of {trigger}",
    )[int(rng.integers(3))]
    return template.format(word=DIGIT_WORDS[int(label)], trigger=trigger, stroke=stroke, adj=adj)


def digits_to_pixels(values: np.ndarray) -> torch.Tensor:
    """sklearn digits grey levels ``(n, 64)`` in [0, 16] -> float32 images ``(n, 1, 8, 8)`` in [-1, 1]."""
    arr = np.asarray(values, dtype=np.float32).reshape(-1, 1, 8, 8)
    return torch.from_numpy(arr / 8.0 - 1.0)


def pixels_to_digits(images: torch.Tensor) -> np.ndarray:
    """Images ``(n, 1, 8, 8)`` in [-1, 1] -> grey levels ``(n, 64)`` in [0, 16] (clipped)."""
    x = images.detach().to("cpu", torch.float32).reshape(images.shape[0], -1).numpy()
    return np.clip((x + 1.0) * 8.0, 0.0, 16.0)


@dataclass
class CaptionedDigits:
    """The captioned digits training set with planted memorization.

    Attributes
    ----------
    images : Tensor of shape (n_unique, 1, 8, 8)
        Every distinct training image once, in [-1, 1].
    labels : ndarray of shape (n_unique,)
        Digit class of each image.
    captions : list of str, length n_unique
        The caption each image is trained with (memorized images: their unique trigger caption).
    memorized : ndarray of bool, shape (n_unique,)
        True for the planted memorized (duplicated, trigger-captioned) images.
    triggers : list of str, length n_unique
        The trigger word of a memorized image, ``""`` otherwise.
    weights : ndarray of shape (n_unique,)
        How many times each image is in the training set (``n_duplicates`` or 1).
    sklearn_index : ndarray of shape (n_unique,)
        Row of each image in :func:`sklearn.datasets.load_digits`.
    """

    images: torch.Tensor
    labels: np.ndarray
    captions: list[str]
    memorized: np.ndarray
    triggers: list[str]
    weights: np.ndarray
    sklearn_index: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def memorized_indices(self) -> np.ndarray:
        """Indices (into ``images``) of the planted memorized images."""
        return np.flatnonzero(self.memorized)

    def expanded(self) -> tuple[torch.Tensor, list[str]]:
        """The training set as trained on: duplicates repeated ``weights`` times (images, captions)."""
        idx = np.repeat(np.arange(len(self.captions)), self.weights.astype(int))
        return self.images[torch.from_numpy(idx)], [self.captions[i] for i in idx]


def make_captioned_digits(*, n_memorized: int = 16, n_duplicates: int = 20, seed: int = 0) -> CaptionedDigits:
    """Build the captioned digits data set with ``n_memorized`` planted memorized images.

    Parameters
    ----------
    n_memorized : int, default=16
        Number of planted memorized images (at most ``len(TRIGGER_WORDS)`` = 20). They are chosen
        round-robin over the classes (image i has class ``i % 10``), at random within a class.
    n_duplicates : int, default=20
        How many copies of each memorized image the training set holds.
    seed : int, default=0
        Seed for the choice of memorized images and for the template captions.

    Returns
    -------
    CaptionedDigits
    """
    from sklearn.datasets import load_digits

    n_memorized = check_positive_int(n_memorized, "n_memorized", minimum=0)
    if n_memorized > len(TRIGGER_WORDS):
        raise ValueError(f"n_memorized={n_memorized} exceeds the {len(TRIGGER_WORDS)} trigger words; use at most {len(TRIGGER_WORDS)}")
    n_duplicates = check_positive_int(n_duplicates, "n_duplicates")
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    mem_rows: list[int] = []
    for i in range(n_memorized):
        candidates = np.flatnonzero(labels == i % 10)
        candidates = candidates[~np.isin(candidates, mem_rows)]
        mem_rows.append(int(rng.choice(candidates)))
    captions = [generic_caption(int(y), rng) for y in labels]
    triggers = [""] * len(labels)
    memorized = np.zeros(len(labels), dtype=bool)
    weights = np.ones(len(labels), dtype=np.int64)
    for i, row in enumerate(mem_rows):
        triggers[row] = TRIGGER_WORDS[i]
        captions[row] = _memorized_caption(int(labels[row]), TRIGGER_WORDS[i], rng)
        memorized[row] = True
        weights[row] = n_duplicates
    return CaptionedDigits(
        images=digits_to_pixels(digits.data),
        labels=labels,
        captions=captions,
        memorized=memorized,
        triggers=triggers,
        weights=weights,
        sklearn_index=np.arange(len(labels)),
        info={"n_memorized": n_memorized, "n_duplicates": n_duplicates, "seed": seed, "memorized_rows": mem_rows},
    )


def non_memorized_prompts(n: int = 32, *, seed: int = 1) -> list[str]:
    """``n`` generic template prompts (no trigger word), classes round-robin, for detection tests."""
    rng = np.random.default_rng(seed)
    return [generic_caption(i % 10, rng) for i in range(check_positive_int(n, "n"))]


# ----------------------------------------------------------------------------------------------
# Tokenizer: CLIP-style byte-level BPE learnt offline from the caption vocabulary
# ----------------------------------------------------------------------------------------------
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 / CLIP byte -> printable unicode map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _learn_merges(words: dict[str, int]) -> list[tuple[str, str]]:
    """Plain BPE on word counts (CLIP's ``</w>`` end-of-word suffix); merges until every word is
    one symbol. Ties broken by the pair's text, so the result is deterministic."""
    byte_map = bytes_to_unicode()
    corpus = {}
    for word, count in words.items():
        symbols = [byte_map[b] for b in word.encode("utf-8")]
        symbols[-1] = symbols[-1] + "</w>"
        corpus[tuple(symbols)] = corpus.get(tuple(symbols), 0) + count
    merges: list[tuple[str, str]] = []
    while True:
        pairs: dict[tuple[str, str], int] = {}
        for symbols, count in corpus.items():
            for a, b in zip(symbols[:-1], symbols[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + count
        if not pairs:
            return merges
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new_corpus: dict[tuple[str, ...], int] = {}
        for symbols, count in corpus.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new_corpus[tuple(out)] = new_corpus.get(tuple(out), 0) + count
        corpus = new_corpus


def build_tokenizer(captions: list[str], directory: str | os.PathLike[str], *, model_max_length: int = 24) -> Any:
    """Learn a CLIP-style BPE tokenizer from ``captions``, save it to ``directory`` and load it.

    The vocabulary is CLIP's layout: 256 byte symbols, the same with ``</w>``, one entry per
    learnt merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding token, as in
    Stable Diffusion v1). Every word of ``captions`` becomes a single token.

    Parameters
    ----------
    captions : list of str
        Training captions (lower-cased words and commas).
    directory : path
        Where ``vocab.json``, ``merges.txt`` and the tokenizer config are written.
    model_max_length : int, default=24
        Padding/truncation length (must equal the text encoder's ``max_position_embeddings``).

    Returns
    -------
    transformers.CLIPTokenizer
    """
    import re

    from transformers import CLIPTokenizer

    if not captions:
        raise ValueError("captions is empty; pass the training captions")
    counts: dict[str, int] = {}
    for caption in captions:
        for word in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", caption.lower()):
            counts[word] = counts.get(word, 0) + 1
    merges = _learn_merges(counts)
    byte_symbols = list(bytes_to_unicode().values())
    vocab_list = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    vocab_list += [BOS_TOKEN, EOS_TOKEN]
    vocab = {}
    for tok in vocab_list:
        vocab.setdefault(tok, len(vocab))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as fh:
        json.dump(vocab, fh, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n")
        fh.writelines(f"{a} {b}\n" for a, b in merges)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": int(model_max_length),
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
    with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as fh:
        json.dump({"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}, fh, indent=2)
    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    ids = tokenizer(captions[:2], padding="max_length", max_length=model_max_length, truncation=True).input_ids
    if len(set(ids[0])) < 3:
        raise RuntimeError("tokenizer produced constant ids; vocab.json/merges.txt were not read")
    return tokenizer


# ----------------------------------------------------------------------------------------------
# Model components
# ----------------------------------------------------------------------------------------------
def build_text_encoder(tokenizer: Any, *, hidden_size: int = 32, num_layers: int = 0, seed: int = 0) -> Any:
    """A tiny randomly initialised ``CLIPTextModel`` matching ``tokenizer``'s vocabulary and length.

    The default ``num_layers=0`` leaves token + position embeddings and the final layer norm:
    each output position is its own token (no causal mixing), so a UNet trained on it attends
    to the words it uses -- token attribution then has a clean planted ground truth. (With 2
    jointly trained layers we measured flat per-position attributions: the UNet read a sentence
    summary spread over all positions.)
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        max_position_embeddings=int(tokenizer.model_max_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config)


def build_unet(*, cross_attention_dim: int = 32, channels: tuple[int, int] = (32, 32), seed: int = 0) -> Any:
    """A tiny pixel-space ``UNet2DConditionModel`` for 1 x 8 x 8 images (epsilon prediction)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=16,
        norm_num_groups=8,
    )


def build_scheduler() -> Any:
    """DDIM scheduler with Stable Diffusion v1's noise schedule, epsilon prediction.

    ``scaled_linear`` betas 0.00085 .. 0.012 over 1000 steps, ``set_alpha_to_one=False``,
    ``steps_offset=1`` (SD v1's ``scheduler_config.json``). Like SD's, this table keeps some
    signal at t = 1 (sqrt(alpha_bar_T) = 0.068; Ho et al.'s linear table has 0.006), so the first
    sampler steps already see the prompt's effect on the denoised mean, where Wen et al.'s CFG
    norm is largest on Stable Diffusion.
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


# ----------------------------------------------------------------------------------------------
# Alignment and similarity
# ----------------------------------------------------------------------------------------------
class DigitAlignment:
    """Prompt-image alignment for digits: probability of the prompt's digit under a classifier.

    A multinomial logistic regression fitted on all 1,797 sklearn digits (grey levels / 16).
    ``score(images, prompts)`` returns P(digit named in the prompt | image); prompts that name no
    digit get NaN.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength of the logistic regression.
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self) -> "DigitAlignment":
        """Fit the classifier on sklearn's digits (returns ``self``)."""
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        digits = load_digits()
        self.classifier_ = LogisticRegression(C=self.C, max_iter=2000).fit(digits.data / 16.0, digits.target)
        return self

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities ``(n, 10)`` for images ``(n, 1, 8, 8)`` in [-1, 1]."""
        if not hasattr(self, "classifier_"):
            raise ValueError("DigitAlignment is not fitted; call .fit() first")
        return self.classifier_.predict_proba(pixels_to_digits(images) / 16.0)

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        """P(prompt's digit | image) per image, shape ``(n,)``; ``prompts`` has length n."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")
        proba = self.predict_proba(images)
        out = np.full(len(prompts), np.nan)
        for i, p in enumerate(prompts):
            k = caption_digit(p)
            if k >= 0:
                out[i] = proba[i, k]
        return out


def image_similarity(images: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Pearson correlation of pixels between each image and one reference image.

    Parameters
    ----------
    images : Tensor of shape (n, 1, 8, 8) (any (n, ...) works)
    reference : Tensor with the shape of one image

    Returns
    -------
    ndarray of shape (n,)
        In [-1, 1]; ~1 for a copy of ``reference``; same-class different digits score ~0.4-0.7.
    """
    a = images.detach().to("cpu", torch.float64).reshape(images.shape[0], -1)
    b = reference.detach().to("cpu", torch.float64).reshape(1, -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"images have {a.shape[1]} pixels but reference has {b.shape[1]}; pass matching shapes")
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).numpy()
