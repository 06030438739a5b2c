"""Token attribution of prompt memorization metrics (Wen et al. 2024; paper Sec. 4.2).

For a prompt c with text-encoder output embeddings E (L x D), the attribution of token position
i is ``|| d metric_step / d E_i ||_2`` averaged over the sampler steps in the metric's
scheduling support (and over generations), with the start token, the end token and padding
excluded, normalised to sum 1. The states x_t come from the CFG DDIM sampler and are treated as
fixed samples (the gradient does not flow through the trajectory), as in Wen et al.'s code.
BPE pieces are then merged back into words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_positive_int, make_generator
from .adapters import TextToImageModel
from .prompt_metrics import PROMPT_METRICS, _in_support, _no_step_error, metric_time_support, step_metric

__all__ = ["TokenAttribution", "token_attribution", "token_attributions", "prompt_tokens", "merge_pieces"]


@dataclass
class TokenAttribution:
    """Normalised per-token attributions of a prompt, with the tokens merged into words.

    Attributes
    ----------
    prompt : str
    metric : str
    tokens : list of str
        The prompt's tokens as the tokenizer writes them (special tokens excluded).
    positions : list of int
        Their positions in the padded id sequence.
    scores : ndarray of shape (n_tokens,)
        Non-negative, sum 1.
    words : list of str
        Words made of consecutive BPE pieces.
    word_of_token : list of int
        Word index of each token.
    word_scores : ndarray of shape (n_words,)
        Sum of the scores of each word's tokens.
    info : dict
        Estimator settings.
    """

    prompt: str
    metric: str
    tokens: list[str]
    positions: list[int]
    scores: np.ndarray
    words: list[str]
    word_of_token: list[int]
    word_scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def top_token(self) -> str:
        return self.tokens[int(np.argmax(self.scores))]

    @property
    def top_word(self) -> str:
        return self.words[int(np.argmax(self.word_scores))]

    def to_frame(self) -> Any:
        """One row per token: position, token, word index, word, score."""
        import pandas as pd

        return pd.DataFrame(
            {
                "position": self.positions,
                "token": self.tokens,
                "word_index": self.word_of_token,
                "word": [self.words[w] for w in self.word_of_token],
                "score": self.scores,
            }
        )


def merge_pieces(tokenizer: Any, tokens: list[str], ids: list[int] | None = None) -> tuple[list[str], list[int]]:
    """Merge BPE/WordPiece/SentencePiece pieces into words.

    Word boundaries: CLIP ``"</w>"`` ends a word; WordPiece ``"##"`` continues one;
    SentencePiece ``"▁"`` and byte-level ``"Ġ"`` start one. Word text is
    ``tokenizer.decode(ids_of_the_word)`` stripped (``ids`` given) or the pieces joined without
    their markers.

    Returns
    -------
    words : list of str
    word_of_token : list of int
    """
    groups: list[list[str]] = []
    word_of_token: list[int] = []
    clip_style = any(t.endswith("</w>") for t in tokens)
    wordpiece = not clip_style and any(t.startswith("##") for t in tokens)
    prefix_style = not clip_style and not wordpiece and any(t.startswith(("▁", "Ġ")) for t in tokens)
    previous_closed = True
    for tok in tokens:
        if not groups:
            new = True
        elif clip_style:
            new = previous_closed
        elif wordpiece:
            new = not tok.startswith("##")
        elif prefix_style:
            new = tok.startswith(("▁", "Ġ"))
        else:
            new = True
        if new:
            groups.append([tok])
        else:
            groups[-1].append(tok)
        word_of_token.append(len(groups) - 1)
        previous_closed = tok.endswith("</w>")
    words = []
    for w, pieces in enumerate(groups):
        text = ""
        if ids is not None:
            wid = [i for i, wo in zip(ids, word_of_token) if wo == w]
            text = tokenizer.decode(wid, skip_special_tokens=True).strip()
        if not text:
            text = "".join(p.replace("</w>", "").replace("##", "").replace("▁", "").replace("Ġ", "") for p in pieces)
        words.append(text)
    return words, word_of_token


def prompt_tokens(model: TextToImageModel, prompt: str) -> tuple[list[int], list[str], list[int]]:
    """Positions, tokens and ids of ``prompt`` in its padded id sequence, special tokens excluded."""
    ids = model.tokenize(prompt)[0].tolist()
    special = set(model.tokenizer.all_special_ids)
    eos = model.tokenizer.eos_token_id
    positions = []
    for i, tid in enumerate(ids):
        if i > 0 and eos is not None and tid == eos:
            break
        if tid in special:
            continue
        positions.append(i)
    if not positions:
        raise ValueError(f"prompt={prompt!r} has no tokens besides special ones; attribution needs a non-empty prompt")
    kept = [ids[i] for i in positions]
    tokens = model.tokenizer.convert_ids_to_tokens(kept)
    return positions, list(tokens), kept


def _embeddings_with_leaf(model: TextToImageModel, prompts: list[str], wrt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompt embeddings (P, L, D); with ``wrt="input"`` they keep a graph back to a leaf tensor
    holding the input token embeddings (P, L, D_in), substituted by a forward hook on the text
    encoder's input embedding (``CLIPTextModel`` takes no ``inputs_embeds``)."""
    if wrt == "output":
        return model.encode_prompt(prompts)[0], None
    ids = model.tokenize(prompts).to(model.device)
    emb = model.text_encoder.get_input_embeddings()
    with torch.no_grad():
        leaf = emb(ids).detach().clone()
    leaf.requires_grad_(True)
    handle = emb.register_forward_hook(lambda module, inputs, output: leaf)
    try:
        with torch.enable_grad():
            cond = model._encode_ids(ids)
    finally:
        handle.remove()
    return cond, leaf


def token_attribution(
    model: TextToImageModel,
    prompt: str,
    *,
    metric: str = "a_cfg",
    n_generations: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    flipd_t_max: float = 0.2,
    flipd_t_min: float = 0.01,
    n_probes: int = 1,
    seed: int = 0,
    wrt: str = "output",
    flipd_point: str = "state",
) -> TokenAttribution:
    """Attribute ``metric`` (one of ``PROMPT_METRICS``) to the prompt's tokens.

    Parameters
    ----------
    metric : {"a_cfg", "a_scfg", "a_flipd", "wen"}, default="a_cfg"
    n_generations, num_inference_steps, guidance_scale, flipd_t_max, flipd_t_min, n_probes, seed
        As in :func:`lidmem.text2image.prompt_metrics`: the trajectories and the steps used
        are the same as for the metric's estimator.
    wrt : {"output", "input"}, default="output"
        Differentiate with respect to the text encoder's OUTPUT embeddings (Wen et al.; the
        paper) or its INPUT token embeddings. With a causal text encoder (CLIP) a token also
        acts through the end/padding positions that follow it, which only "input" credits to it.

    Returns
    -------
    TokenAttribution
        ``scores`` sum to 1 over the prompt's tokens (start/end/padding excluded).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string; got {type(prompt).__name__}")
    return token_attributions(
        model, [prompt], metric=metric, n_generations=n_generations, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, flipd_t_max=flipd_t_max, flipd_t_min=flipd_t_min, n_probes=n_probes, seed=seed, batch_size=1, wrt=wrt, flipd_point=flipd_point,
    )[0]


def token_attributions(
    model: TextToImageModel,
    prompts: list[str],
    *,
    metric: str = "a_cfg",
    n_generations: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    flipd_t_max: float = 0.2,
    flipd_t_min: float = 0.01,
    n_probes: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    wrt: str = "output",
    flipd_point: str = "state",
    progress: bool | None = None,
) -> list[TokenAttribution]:
    """:func:`token_attribution` for many prompts, ``batch_size`` prompts per sampler batch.

    Each prompt's metric depends only on its own embedding, so one backward pass through the
    batch gives every prompt's gradient. Every prompt starts from the same noise (``seed``).
    """
    from ..utils import progress as _progress

    check_choice(metric, "metric", PROMPT_METRICS)
    check_choice(wrt, "wrt", ("output", "input"))
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
        raise TypeError("prompts must be a non-empty list of strings")
    n_gen = check_positive_int(n_generations, "n_generations")
    pb = check_positive_int(batch_size, "batch_size")
    support = metric_time_support(metric, flipd_t_min, flipd_t_max)
    toks = [prompt_tokens(model, p) for p in prompts]
    noise = model.initial_noise(n_gen, seed)
    uncond = model.unconditional_embeds(1)
    results: list[TokenAttribution] = []
    batches = [list(range(i, min(i + pb, len(prompts)))) for i in range(0, len(prompts), pb)]
    for idx in _progress(batches, desc="attribution", disable=None if progress is None else not progress):
        P = len(idx)
        cond, leaf = _embeddings_with_leaf(model, [prompts[i] for i in idx], wrt)
        rows = cond.repeat_interleave(n_gen, dim=0)
        acc = torch.zeros(P, cond.shape[1], dtype=torch.float32, device=cond.device)
        n_steps = [0]
        g = make_generator(seed + 1)

        def callback(state: dict[str, Any]) -> None:
            t = state["t"]
            if not _in_support(t, support):
                return
            if wrt == "output":
                c = cond.detach().clone().requires_grad_(True)
                target = c
            else:
                c, target = cond, leaf
            v = step_metric(model, metric, state["x"], t, c.repeat_interleave(n_gen, dim=0), uncond, guidance_scale, n_probes=n_probes, seed=g, flipd_point=flipd_point)
            (grad,) = torch.autograd.grad(v.reshape(P, n_gen).mean(1).sum(), target, retain_graph=wrt == "input")
            acc.add_(grad.float().norm(dim=-1))
            n_steps[0] += 1

        model.sample(rows.detach(), uncond, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, latents=noise.repeat(P, *([1] * (noise.ndim - 1))), callback=callback, progress=False)
        if n_steps[0] == 0:
            raise _no_step_error(num_inference_steps, support)
        per_pos = (acc / n_steps[0]).cpu().numpy().astype(np.float64)
        for j, i in enumerate(idx):
            positions, tokens, token_ids = toks[i]
            raw = per_pos[j][positions]
            total = raw.sum()
            scores = raw / total if total > 0 and np.isfinite(total) else np.full(len(positions), 1.0 / len(positions))
            words, word_of_token = merge_pieces(model.tokenizer, tokens, token_ids)
            word_scores = np.zeros(len(words))
            np.add.at(word_scores, np.asarray(word_of_token), scores)
            results.append(
                TokenAttribution(
                    prompt=prompts[i],
                    metric=metric,
                    tokens=tokens,
                    positions=positions,
                    scores=scores,
                    words=words,
                    word_of_token=word_of_token,
                    word_scores=word_scores,
                    info={
                        "n_generations": n_gen,
                        "num_inference_steps": num_inference_steps,
                        "guidance_scale": guidance_scale,
                        "t_min": support[0],
                        "t_max": support[1],
                        "steps_used": n_steps[0],
                        "seed": seed,
                        "wrt": wrt,
                        "flipd_point": flipd_point,
                        "zero_gradient": not (total > 0),
                    },
                )
            )
    return results
