"""Mitigating prompt memorization (paper Sec. 4.2, App. D.3-D.4).

1. Choose k tokens: sampled without replacement from the normalised attributions
   (:func:`select_tokens` with ``method="attribution"``) or uniformly (``"uniform"`` baseline).
2. Rewrite the prompt changing only the words that hold those tokens, through a pluggable
   :class:`Rewriter`: :class:`RuleRewriter` (offline default, the rules of the paper's Box 1 with a
   built-in synonym table) or :class:`ChatRewriter` (any OpenAI-compatible chat endpoint, URL and
   key from environment variables; never required).
3. Random token addition (RTA, Somepalli et al. 2023): :func:`random_token_addition` inserts k
   random vocabulary tokens.
4. :func:`optimize_prompt_embedding`: Adam on the prompt embedding to raise A^FLIPD (App. D.3).
5. :func:`evaluate_mitigation`: similarity of new generations to the memorized training image
   (lower is better) and prompt-image alignment (higher is better) over k and repeats.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .._validation import check_choice, check_device, check_positive_int, make_generator
from ..utils import progress as _progress
from .adapters import TextToImageModel
from .attribution import TokenAttribution, token_attribution
from .prompt_metrics import _in_support, _no_step_error, metric_time_support, step_metric

__all__ = [
    "select_tokens",
    "Rewriter",
    "RuleRewriter",
    "ChatRewriter",
    "check_chat_url",
    "box1_instruction",
    "rewrite_prompt",
    "random_token_addition",
    "optimize_prompt_embedding",
    "pixel_cosine",
    "clip_alignment",
    "evaluate_mitigation",
    "DEFAULT_SYNONYMS",
    "DEFAULT_KS",
]

DEFAULT_KS: tuple[int, ...] = (1, 2, 3, 4, 6, 8)

#: Small built-in synonym table for the offline rewriter (lower-case keys).
DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "photo": ("picture", "image", "snapshot"), "picture": ("photo", "image"), "image": ("picture", "photo"),
    "painting": ("artwork", "canvas"), "drawing": ("sketch", "illustration"), "sketch": ("drawing",),
    "illustration": ("drawing", "artwork"), "poster": ("print", "placard"), "art": ("artwork",),
    "big": ("large", "huge"), "large": ("big", "huge"), "huge": ("enormous", "large"), "small": ("little", "tiny"),
    "little": ("small", "tiny"), "tiny": ("small", "little"), "tall": ("high",), "short": ("brief", "small"),
    "old": ("aged", "vintage"), "new": ("modern", "fresh"), "modern": ("contemporary", "new"), "vintage": ("retro", "old"),
    "beautiful": ("lovely", "pretty"), "pretty": ("lovely", "beautiful"), "nice": ("pleasant", "fine"),
    "red": ("crimson", "scarlet"), "blue": ("azure", "navy"), "green": ("emerald",), "yellow": ("golden",),
    "black": ("dark", "ebony"), "white": ("pale", "ivory"), "dark": ("dim", "shadowy"), "bright": ("vivid", "brilliant"),
    "cat": ("kitten", "kitty"), "dog": ("puppy", "hound"), "man": ("guy", "gentleman"), "woman": ("lady",),
    "girl": ("lass",), "boy": ("lad",), "child": ("kid",), "kid": ("child",), "people": ("persons", "folks"),
    "house": ("home", "building"), "home": ("house",), "building": ("structure",), "street": ("road", "avenue"),
    "road": ("street", "path"), "car": ("automobile", "vehicle"), "truck": ("lorry",), "boat": ("vessel", "ship"),
    "city": ("town",), "town": ("village", "city"), "forest": ("woods",), "sea": ("ocean",), "ocean": ("sea",),
    "mountain": ("peak", "hill"), "hill": ("mound",), "river": ("stream",), "sky": ("heavens",), "sun": ("sunlight",),
    "night": ("evening",), "morning": ("dawn",), "kitchen": ("cookhouse",), "room": ("chamber",), "table": ("desk",),
    "chair": ("seat",), "bed": ("cot",), "floor": ("flooring",), "floors": ("flooring",), "wall": ("partition",),
    "shirt": ("top", "tee"), "dress": ("gown", "frock"), "shoes": ("footwear",), "bag": ("sack", "pouch"),
    "hat": ("cap",), "wheel": ("rim",), "phone": ("smartphone",), "case": ("cover", "sleeve"), "cover": ("case",),
    "book": ("volume",), "food": ("meal", "dish"), "meal": ("dish",), "sitting": ("seated", "resting"),
    "standing": ("upright",), "walking": ("strolling",), "running": ("jogging",), "holding": ("carrying", "gripping"),
    "wearing": ("dressed in",), "looking": ("gazing",), "smiling": ("grinning",), "with": ("having",),
    "near": ("beside", "by"), "beside": ("next to",), "on": ("upon", "atop"), "under": ("beneath", "below"),
    "and": ("plus", "&"), "of": ("from",), "in": ("inside", "within"), "the": ("this", "that"), "a": ("one", "some"),
    "an": ("one",), "for": ("to suit",), "best": ("finest", "top"), "top": ("best", "leading"), "free": ("complimentary",),
    "full": ("complete", "entire"), "easy": ("simple", "effortless"), "quick": ("fast", "rapid"), "fast": ("quick",),
    "set": ("collection",), "collection": ("set", "series"), "series": ("range", "line"), "design": ("style", "pattern"),
    "style": ("design", "fashion"), "pattern": ("design", "motif"), "stripe": ("band", "streak"), "wallpaper": ("backdrop",),
    "background": ("backdrop",), "view": ("scene", "vista"), "scene": ("view",), "portrait": ("likeness", "headshot"),
    "digit": ("numeral", "number"), "number": ("numeral", "digit"), "handwritten": ("hand-drawn", "penned"),
    "written": ("penned", "drawn"), "thick": ("bold", "heavy"), "thin": ("slim", "fine"), "stroke": ("line", "mark"),
    "bold": ("thick", "heavy"), "clean": ("neat", "tidy"), "messy": ("untidy", "sloppy"), "centered": ("centred", "middle"),
}

#: Words the offline rewriter keeps (the quantity or class a caption names is content, Box 1 rule 3).
DEFAULT_KEEP: frozenset[str] = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve".split()
)

_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")


def select_tokens(
    scores: TokenAttribution | Sequence[float] | np.ndarray,
    k: int,
    *,
    method: str = "attribution",
    seed: int | np.random.Generator | None = 0,
) -> list[int]:
    """Indices of k of the prompt's tokens, drawn without replacement.

    Parameters
    ----------
    scores : TokenAttribution or array of shape (n_tokens,)
        Non-negative attributions (normalised inside).
    k : int
        1 <= k <= n_tokens.
    method : {"attribution", "uniform"}
        Categorical distribution given by the normalised attributions, or uniform.

    Returns
    -------
    list of int
        Token indices (into ``TokenAttribution.tokens``), in draw order.
    """
    check_choice(method, "method", ("attribution", "uniform"))
    p = np.asarray(scores.scores if isinstance(scores, TokenAttribution) else scores, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("scores must be a non-empty 1-D array of non-negative finite attributions")
    k = check_positive_int(k, "k")
    if k > p.size:
        raise ValueError(f"k={k} exceeds the number of tokens {p.size}; choose k <= {p.size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if method == "uniform" or p.sum() <= 0:
        p = np.ones_like(p)
    p = p / p.sum()
    nonzero = int((p > 0).sum())
    if k > nonzero:  # draw the zero-probability tokens last, uniformly
        first = list(rng.choice(p.size, size=nonzero, replace=False, p=p))
        rest = [i for i in range(p.size) if i not in first]
        return first + list(rng.choice(rest, size=k - nonzero, replace=False))
    return [int(i) for i in rng.choice(p.size, size=k, replace=False, p=p)]


@runtime_checkable
class Rewriter(Protocol):
    """Rewrites a prompt changing only the selected words.

    ``rewrite(prompt, words, selected, *, seed) -> str`` where ``words`` are the prompt's words
    in order (as :class:`TokenAttribution.words`) and ``selected`` the indices of the words
    to perturb.
    """

    def rewrite(self, prompt: str, words: Sequence[str], selected: Sequence[int], *, seed: int = 0) -> str: ...


def _word_spans(prompt: str, words: Sequence[str]) -> list[tuple[int, int] | None]:
    """Character span of each word in ``prompt`` (case-insensitive, in order); None if not found."""
    low = prompt.lower()
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for w in words:
        i = low.find(w.lower(), cursor) if w else -1
        if i < 0:
            spans.append(None)
            continue
        end = i + len(w)
        if len(spans) == len(words) - 1:  # a word cut by truncation: take its whole alphanumeric run
            while end < len(prompt) and prompt[end].isalnum() and w[-1:].isalnum():
                end += 1
        spans.append((i, end))
        cursor = end
    return spans


def _replace_words(prompt: str, words: Sequence[str], replacements: Mapping[int, str]) -> str:
    spans = _word_spans(prompt, words)
    if any(spans[i] is None for i in replacements):
        out = [replacements.get(i, w) for i, w in enumerate(words)]
        return " ".join(w for w in out if w)
    text = prompt
    for i in sorted(replacements, key=lambda j: spans[j][0], reverse=True):  # type: ignore[index]
        a, b = spans[i]  # type: ignore[misc]
        new = replacements[i]
        if not new:  # deletion: also drop one adjacent space
            if b < len(text) and text[b] == " " and (a == 0 or text[a - 1] == " "):
                b += 1
            elif a > 0 and text[a - 1] == " ":
                a -= 1
        text = text[:a] + new + text[b:]
    return text.strip()


class RuleRewriter:
    """Offline rewriter following the paper's Box 1.

    1. Punctuation / special characters without semantics are removed.
    2. Numbers move slightly (n -> n +- 1 or 2, never below 0).
    3. Names stay: capitalised words that do not start the prompt, and ``keep`` words.
    4. Other words become a synonym from ``synonyms`` (case kept); a word with no known synonym is
       treated as a token without significant semantics (rule 1) and removed -- rare trigger
       tokens that drive memorization are exactly such words.

    Parameters
    ----------
    synonyms : mapping of str to sequence of str, optional
        Lower-case word -> candidate synonyms. Default :data:`DEFAULT_SYNONYMS`; entries given
        here are added to (and override) the default table.
    keep : collection of str, optional
        Lower-case words never changed. Default: number words zero..twelve.
    use_default_table : bool, default=True
        Start from :data:`DEFAULT_SYNONYMS`; set False so that only ``synonyms`` is used (a
        model with a small vocabulary should get no words it never saw).
    """

    def __init__(
        self,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        keep: Sequence[str] | frozenset[str] | None = None,
        use_default_table: bool = True,
    ) -> None:
        self.synonyms = synonyms
        self.keep = keep
        self.use_default_table = use_default_table

    def _table(self) -> dict[str, tuple[str, ...]]:
        table = dict(DEFAULT_SYNONYMS) if self.use_default_table else {}
        if self.synonyms is not None:
            table.update({k.lower(): tuple(v) for k, v in self.synonyms.items()})
        return table

    def replacement(self, word: str, *, first: bool, rng: np.random.Generator) -> str:
        """The replacement of one word ('' = removed)."""
        keep = DEFAULT_KEEP if self.keep is None else frozenset(w.lower() for w in self.keep)
        if not any(ch.isalnum() for ch in word):
            return ""
        if _NUMBER.match(word):
            value = float(word.replace(",", "."))
            delta = int(rng.choice([-2, -1, 1, 2]))
            new = value + delta if value + delta >= 0 else value - delta
            return str(int(new)) if float(new).is_integer() and "." not in word and "," not in word else f"{new:g}"
        if word.lower() in keep or (word[:1].isupper() and not first):
            return word
        options = self._table().get(word.lower())
        if not options:
            return ""
        new = str(rng.choice(list(options)))
        return new[:1].upper() + new[1:] if word[:1].isupper() else new

    def rewrite(self, prompt: str, words: Sequence[str], selected: Sequence[int], *, seed: int = 0) -> str:
        rng = np.random.default_rng(seed)
        spans = _word_spans(prompt, words)
        reps = {}
        for i in sorted({int(j) for j in selected}):
            span = spans[i]
            surface = prompt[span[0] : span[1]] if span is not None else words[i]  # original case
            reps[i] = self.replacement(surface, first=i == 0, rng=rng)
        return _replace_words(prompt, words, reps)

    def __repr__(self) -> str:
        return f"RuleRewriter(synonyms={'default' if self.synonyms is None else len(self.synonyms)}, keep={self.keep!r})"


def box1_instruction(original_tokens: Sequence[str], selected_tokens: Sequence[str]) -> str:
    """The paper's Box 1 instruction for an LLM rewriter."""
    return (
        f"I have the following caption as a sequence of tokens: {list(original_tokens)}\n"
        f"I want to create a new caption based on this one, but I want to perturb the following tokens: {list(selected_tokens)}\n"
        "These are the rules to follow for perturbing tokens:\n"
        "1. If the token is a special character or punctuation without significant semantics, you can remove it or change it to any special character\n"
        "2. If the token is a number, you can replace it with another number that is close to it\n"
        "3. If the token is a special name, such as the name of someone or some place or some culture, it should not be replaced\n"
        "4. If the token is any other word, you can replace and rephrase it with any synonym that makes sense in the context\n"
        "Given these requirements, please provide me with a new caption, not as a sequence of tokens, but as a natural language "
        "sentence that semantically matches closely with the original caption except for the perturbed tokens. Do not say "
        "anything else in response, only provide the new caption."
    )


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def check_chat_url(url: str, name: str = "url") -> str:
    """Validate an OpenAI-compatible base URL: ``https://host/...``, or ``http://`` only for this
    machine (localhost, 127.0.0.1, ::1), so an API key never travels in clear text."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(url))
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"{name}={url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{name}={url!r} must be an http(s) URL such as https://api.openai.com/v1")
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS and not host.endswith(".localhost"):
        raise ValueError(
            f"{name}={url!r} uses plain http:// for the non-local host {host!r}; use https:// (http:// is allowed for localhost only)"
        )
    return str(url)


class ChatRewriter:
    """Rewriter that asks an OpenAI-compatible chat endpoint with the Box 1 instruction.

    Never used by default. The endpoint's base URL (``.../v1``) and key are read from the
    environment at call time (``LIDMEM_LLM_URL`` / ``OPENAI_API_KEY`` unless other variable
    names are given); the request is ``POST {url}/chat/completions`` sent with ``requests``.

    Security: the URL must be ``https://`` (``http://`` only for localhost, see
    :func:`check_chat_url`), and a redirect to another host never carries the ``Authorization``
    header (``requests`` drops it when the host changes or https is downgraded).

    Parameters
    ----------
    model : str, default="gpt-4"
    url_env, key_env : str
        Names of the environment variables holding the base URL and the API key.
    timeout : float, default=60
    """

    def __init__(self, model: str = "gpt-4", *, url_env: str = "LIDMEM_LLM_URL", key_env: str = "OPENAI_API_KEY", timeout: float = 60.0) -> None:
        self.model = model
        self.url_env = url_env
        self.key_env = key_env
        self.timeout = timeout

    def endpoint(self) -> str:
        """The validated base URL from ``$url_env`` (raises ValueError naming the variable)."""
        url = os.environ.get(self.url_env)
        if not url:
            raise ValueError(f"set the environment variable {self.url_env} to the chat endpoint's base URL (e.g. https://api.openai.com/v1)")
        return check_chat_url(url, self.url_env)

    def request(self, prompt: str, words: Sequence[str], selected: Sequence[int]) -> tuple[str, bytes, dict[str, str]]:
        """The (url, body, headers) of the request, without sending it."""
        url = self.endpoint()
        key = os.environ.get(self.key_env, "")
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": box1_instruction(list(words), [words[i] for i in selected])}],
            "temperature": 1.0,
        }
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers

    def rewrite(self, prompt: str, words: Sequence[str], selected: Sequence[int], *, seed: int = 0) -> str:
        import requests

        url, body, headers = self.request(prompt, words, selected)
        try:
            resp = requests.post(url, data=body, headers=headers, timeout=self.timeout)
            resp.raise_for_status()
            reply = resp.json()
        except requests.RequestException as exc:
            raise OSError(f"chat endpoint {url} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        except ValueError:
            raise ValueError(f"chat endpoint {url} did not answer with JSON") from None
        try:
            return str(reply["choices"][0]["message"]["content"]).strip().strip('"')
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"unexpected reply from {url}: {str(reply)[:200]}") from exc


def rewrite_prompt(
    attribution: TokenAttribution,
    token_indices: Sequence[int],
    rewriter: Rewriter | None = None,
    *,
    seed: int = 0,
) -> str:
    """Rewrite ``attribution.prompt`` changing only the words holding the selected tokens."""
    rw = RuleRewriter() if rewriter is None else rewriter
    if not hasattr(rw, "rewrite"):
        raise TypeError(f"rewriter must have a rewrite(prompt, words, selected, *, seed) method; got {type(rw).__name__}")
    n = len(attribution.tokens)
    bad = [i for i in token_indices if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"token indices {bad} are out of range for {n} tokens")
    selected_words = sorted({attribution.word_of_token[int(i)] for i in token_indices})
    return rw.rewrite(attribution.prompt, attribution.words, selected_words, seed=seed)


def random_token_addition(model_or_tokenizer: Any, prompt: str, k: int, *, seed: int = 0) -> str:
    """RTA baseline: insert k tokens drawn uniformly from the vocabulary at random word boundaries."""
    tok = model_or_tokenizer.tokenizer if isinstance(model_or_tokenizer, TextToImageModel) else model_or_tokenizer
    k = check_positive_int(k, "k")
    rng = np.random.default_rng(seed)
    special = set(tok.all_special_ids)
    vocab_size = len(tok)
    new_words: list[str] = []
    while len(new_words) < k:
        tid = int(rng.integers(vocab_size))
        if tid in special:
            continue
        text = tok.decode([tid], skip_special_tokens=True).strip()
        if text and text.isprintable() and any(ch.isalnum() for ch in text) and "\ufffd" not in text:
            new_words.append(text)
    words = prompt.split(" ")
    for w in new_words:
        words.insert(int(rng.integers(len(words) + 1)), w)
    return " ".join(words)


def pixel_cosine(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each mean-centred, flattened image ``(n, ...)`` to ``reference`` ``(...)``."""
    a = images.reshape(images.shape[0], -1).float()
    b = reference.reshape(1, -1).float().to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"images have {a.shape[1]} values each but reference has {b.shape[1]}; use the same resolution")
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def clip_alignment(path: str, *, device: str | torch.device | None = None, local_files_only: bool = True) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """Prompt-image alignment scorer from a local CLIP model folder (``transformers.CLIPModel``).

    Returns ``score(images, prompt) -> Tensor (n,)``: the cosine similarity of CLIP's image and
    text embeddings (CLIP score / 100). Images are pixels in [-1, 1] ``(n, c, H, W)`` (grey
    images are repeated to RGB), resized bicubically to CLIP's input size and normalised with
    CLIP's mean and std; no torchvision needed.
    """
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(path, local_files_only=local_files_only).eval()
    dev = check_device(device) if device is not None else torch.device("cpu")
    clip.to(dev)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
    size = int(clip.config.vision_config.image_size)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=dev).reshape(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=dev).reshape(1, 3, 1, 1)

    def _features(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def score(images: torch.Tensor, prompt: str) -> torch.Tensor:
        x = (images.float().to(dev) + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = torch.nn.functional.interpolate(x.clamp(0, 1), size=(size, size), mode="bicubic", align_corners=False)
        img = _features(clip.get_image_features(pixel_values=(x - mean) / std))
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids.to(dev)
        txt = _features(clip.get_text_features(input_ids=ids))
        return torch.nn.functional.cosine_similarity(img, txt.expand_as(img), dim=1).cpu()

    return score


def optimize_prompt_embedding(
    model: TextToImageModel,
    prompt: str | torch.Tensor,
    *,
    steps: int = 10,
    lr: float = 0.01,
    n_generations: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    flipd_t_max: float = 0.2,
    flipd_t_min: float = 0.01,
    n_probes: int = 1,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[torch.Tensor, Any]:
    """Raise A^FLIPD(c) by Adam on the prompt embedding c (App. D.3).

    At every optimisation step, DDIM trajectories are drawn with the current embedding (same
    noise every step) and ``-A^FLIPD`` (the average of FLIPD_CFG over the steps with
    flipd_t_min <= t <= flipd_t_max, states held fixed) is minimised.

    Returns
    -------
    embeds : Tensor of shape (1, L, D)
        The optimised prompt embedding (use with ``model.generate(prompt_embeds=...)``).
    history : pandas.DataFrame
        ``step`` and ``a_flipd`` before each update, then the final value.
    """
    import pandas as pd

    cond = model.encode_prompt(prompt)[0] if isinstance(prompt, str) else prompt.detach()
    uncond = model.unconditional_embeds(1)
    c = cond.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([c], lr=lr)
    support = metric_time_support("a_flipd", flipd_t_min, flipd_t_max)
    history = []
    noise = model.initial_noise(check_positive_int(n_generations, "n_generations"), seed)

    def objective() -> torch.Tensor:
        states: list[tuple[torch.Tensor, float]] = []

        def cb(state: dict[str, Any]) -> None:
            if _in_support(state["t"], support):
                states.append((state["x"].detach(), state["t"]))

        with torch.no_grad():
            model.sample(c.detach().to(model.dtype), uncond, n=noise.shape[0], num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, latents=noise, callback=cb, progress=False)
        if not states:
            raise _no_step_error(num_inference_steps, support)
        g = make_generator(seed + 1)
        vals = [step_metric(model, "a_flipd", x, t, c.to(model.dtype), uncond, guidance_scale, n_probes=n_probes, seed=g).mean() for x, t in states]
        return torch.stack(vals).mean()

    for i in _progress(range(check_positive_int(steps, "steps")), desc="optimise c", disable=None if progress is None else not progress):
        opt.zero_grad()
        value = objective()
        (-value).backward()
        opt.step()
        history.append({"step": i, "a_flipd": float(value.detach())})
    with torch.no_grad():
        history.append({"step": len(history), "a_flipd": float(objective())})
    return c.detach().to(model.dtype), pd.DataFrame(history)


def evaluate_mitigation(
    model: TextToImageModel,
    prompt: str,
    reference_image: torch.Tensor,
    *,
    attribution: TokenAttribution | None = None,
    metric: str = "a_flipd",
    ks: Sequence[int] = DEFAULT_KS,
    methods: Sequence[str] = ("attribution", "uniform", "rta"),
    repeats: int = 5,
    rewriter: Rewriter | None = None,
    similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    alignment: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
    n_generations: int = 4,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool | None = None,
) -> Any:
    """Evaluate prompt rewriting for one memorized prompt.

    For every method in ``methods`` ("attribution": tokens sampled from the attributions and
    rewritten; "uniform": tokens sampled uniformly and rewritten; "rta": k random vocabulary
    tokens inserted), every k in ``ks`` and ``repeats`` repeats, generate ``n_generations``
    images of the new prompt (the same initial noise for every row) and record their mean
    similarity to ``reference_image`` (the memorized training image, pixels in [-1, 1]) and
    their mean alignment with the ORIGINAL prompt. A row with ``method="original"``, k = 0, gives
    the unmitigated values. When k exceeds the number of tokens, all tokens are selected and
    ``k_used`` says so.

    Parameters
    ----------
    attribution : TokenAttribution, optional
        Computed with ``metric`` (and the same sampling settings) when not given.
    similarity : callable(images (n, ...), reference (...)) -> Tensor (n,), optional
        Default :func:`pixel_cosine`. (SSCD or another embedder where the user has one.)
    alignment : callable(images (n, ...), prompt) -> Tensor (n,), optional
        Prompt-image alignment (e.g. a CLIP score, or a classifier's probability of the
        prompt's class); the column is NaN without one.
    batch_size : int, default=8
        Distinct prompts generated together (each prompt is generated once).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, k, k_used, repeat, prompt, similarity, alignment``.
    """
    import pandas as pd

    for m in methods:
        check_choice(m, "methods", ("attribution", "uniform", "rta"))
    reps = check_positive_int(repeats, "repeats")
    sim = pixel_cosine if similarity is None else similarity
    rw = RuleRewriter() if rewriter is None else rewriter
    if attribution is None:
        attribution = token_attribution(model, prompt, metric=metric, n_generations=1, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
    n_tok = len(attribution.tokens)

    n_gen = check_positive_int(n_generations, "n_generations")
    pb = check_positive_int(batch_size, "batch_size")
    rows = [{"method": "original", "k": 0, "k_used": 0, "repeat": 0, "prompt": prompt}]
    for method in methods:
        for k in ks:
            k = check_positive_int(k, "ks")
            for r in range(reps):
                row_seed = seed + 1000 * r + k
                if method == "rta":
                    new, k_used = random_token_addition(model, prompt, k, seed=row_seed), k
                else:
                    k_used = min(k, n_tok)
                    idx = select_tokens(attribution, k_used, method=method, seed=row_seed)
                    new = rewrite_prompt(attribution, idx, rw, seed=row_seed)
                rows.append({"method": method, "k": k, "k_used": k_used, "repeat": r, "prompt": new})
    # generate each distinct prompt once, every prompt from the same noise, batch_size prompts at a time
    unique = list(dict.fromkeys(row["prompt"] for row in rows))
    noise = model.initial_noise(n_gen, seed)
    measured: dict[str, tuple[float, float]] = {}
    for i in _progress(range(0, len(unique), pb), desc="mitigation", disable=None if progress is None else not progress):
        batch = unique[i : i + pb]
        cond = model.encode_prompt(batch)[0].repeat_interleave(n_gen, dim=0)
        x = model.sample(cond, None, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, latents=noise.repeat(len(batch), *([1] * (noise.ndim - 1))), progress=False)
        imgs = model.decode(x)
        for j, p in enumerate(batch):
            im = imgs[j * n_gen : (j + 1) * n_gen]
            s_val = float(sim(im, reference_image).float().mean())
            a_val = float(alignment(im, prompt).float().mean()) if alignment is not None else float("nan")
            measured[p] = (s_val, a_val)
    for row in rows:
        row["similarity"], row["alignment"] = measured[row["prompt"]]
    df = pd.DataFrame(rows)
    df.attrs.update({"metric": attribution.metric, "n_generations": n_generations, "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "seed": seed})
    return df
