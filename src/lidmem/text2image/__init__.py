"""Text-to-image memorization: conditional score models around diffusers components, image
scores, prompt metrics, token attribution and mitigation (paper Sections 3, 4.2; App. C, D).

Heavy dependencies (diffusers, transformers) are imported only when a model is built or loaded.
"""

from .adapters import PREDICTION_TYPES, TextToImageModel, load_text2image, math_attention

__all__ = [
    "TextToImageModel",
    "load_text2image",
    "math_attention",
    "PREDICTION_TYPES",
    "score_images",
    "image_flipd",
    "cfg_norm_after_euler",
    "prompt_metrics",
    "PromptMetricResult",
    "token_attribution",
    "TokenAttribution",
]

_LAZY = {
    "score_images": "image_scores",
    "image_flipd": "image_scores",
    "cfg_norm_after_euler": "image_scores",
    "prompt_metrics": "prompt_metrics",
    "PromptMetricResult": "prompt_metrics",
    "token_attribution": "attribution",
    "TokenAttribution": "attribution",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
