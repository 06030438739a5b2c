"""Text-to-image memorization: conditional score models around diffusers components, image
scores, prompt metrics, token attribution and mitigation (paper Sections 3, 4.2; App. C, D).

Heavy dependencies (diffusers, transformers) are imported only when a model is built or loaded.
"""

from .adapters import PREDICTION_TYPES, TextToImageModel, math_attention
from .attribution import TokenAttribution, token_attribution, token_attributions
from .image_scores import IMAGE_METRICS, cfg_flipd_at, cfg_norm_after_euler, image_flipd, score_images
from .loading import load_text2image
from .mitigation import (
    ChatRewriter,
    Rewriter,
    RuleRewriter,
    clip_alignment,
    evaluate_mitigation,
    optimize_prompt_embedding,
    pixel_cosine,
    random_token_addition,
    rewrite_prompt,
    select_tokens,
)
from .prompt_metrics import PROMPT_METRICS, detection_table, prompt_metrics, read_prompts, step_metric

__all__ = [
    "TextToImageModel",
    "load_text2image",
    "math_attention",
    "PREDICTION_TYPES",
    "IMAGE_METRICS",
    "cfg_flipd_at",
    "image_flipd",
    "cfg_norm_after_euler",
    "score_images",
    "PROMPT_METRICS",
    "prompt_metrics",
    "step_metric",
    "read_prompts",
    "detection_table",
    "TokenAttribution",
    "token_attribution",
    "token_attributions",
    "select_tokens",
    "Rewriter",
    "RuleRewriter",
    "ChatRewriter",
    "rewrite_prompt",
    "random_token_addition",
    "optimize_prompt_embedding",
    "pixel_cosine",
    "clip_alignment",
    "evaluate_mitigation",
]


def __getattr__(name: str) -> object:
    if name == "LARGER_IS_MEMORIZED":  # deprecated alias (one release): lidmem.memorization.metrics.HIGHER_IS_MEMORIZED
        import importlib

        # the package attribute prompt_metrics is the function; the module holds the alias
        return importlib.import_module(".prompt_metrics", __name__).LARGER_IS_MEMORIZED
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
