"""Text-conditional score models around diffusers components, with classifier-free guidance.

Conventions
-----------
- Model space: the UNet's input space, i.e. VAE latents ``(n, c, h, w)`` for latent diffusion
  (Stable Diffusion) or pixels for a pixel-space model. Images given in pixel space are in
  [-1, 1] (diffusers' convention) and are encoded with the VAE posterior *mean* times
  ``vae.config.scaling_factor``.
- Time: continuous ``t`` in [0, 1]; the UNet receives the fractional timestep
  ``tau = t (N - 1)`` of the scheduler's real ``alphas_cumprod`` table of length N
  (:class:`lidmem.DDPMSchedule`, App. D.1). psi(t) = sqrt(alpha-bar), sigma(t)^2 = 1 - alpha-bar.
- Conditioning: text-encoder output embeddings of shape ``(n or 1, L, D)``; a batch of 1
  broadcasts over the images. The unconditional embedding is the embedding of ``""`` (or of a
  negative prompt), as in diffusers.
- Classifier-free guidance with guidance scale lambda (diffusers' ``guidance_scale``)::

      s_CFG(x; t, c) = (1 - lambda) s(x; t, empty) + lambda s(x; t, c)     (eq. 2 / 16)

  computed from ONE UNet batch ordered ``[uncond, cond]`` and split by ``chunk(2)`` in
  :meth:`TextToImageModel.branch_outputs` -- the only place that knows the order. The same affine
  combination applies to epsilon / v / x0 outputs because the weights sum to 1.
- The model IS a conditional score model for the whole of lidmem: ``model(x, t, cond=...,
  uncond=..., guidance_scale=...)`` returns s_CFG and ``model.sde`` is its forward process, so
  :func:`lidmem.estimators.flipd`, :func:`~lidmem.estimators.normal_bundle` and the samplers of
  :mod:`lidmem.diffusion.sampling` take it directly with
  ``extra_args={"cond": c, "uncond": u, "guidance_scale": lam}`` (the conditioning channel).
- Forward-mode AD (``torch.func.jvp``) through attention: fused scaled-dot-product attention
  has no forward-AD formula, so every derivative computation runs inside
  :func:`math_attention` (``sdpa_kernel(SDPBackend.MATH)``; the core estimators do this
  themselves), which leaves the user's UNet untouched (no attention processor is replaced).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .._validation import check_positive_int, make_generator
from ..diffusion.score import network_output, prediction_to_score
from ..diffusion.sde import DDPMSchedule
from ..utils import append_dims

__all__ = [
    "TextToImageModel",
    "math_attention",
    "PREDICTION_TYPES",
]


def __getattr__(name: str) -> Any:
    if name == "load_text2image":  # deprecated alias (one release): moved to lidmem.text2image.loading
        import warnings

        from . import loading

        warnings.warn("lidmem.text2image.adapters.load_text2image moved to lidmem.text2image.loading; import it from "
                      "lidmem.text2image (or lidmem.text2image.loading)", DeprecationWarning, stacklevel=2)
        return loading.load_text2image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: diffusers ``prediction_type`` -> lidmem :class:`ScoreModel` ``prediction``.
PREDICTION_TYPES: dict[str, str] = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run attention as plain matmul + softmax so that forward- and double-backward AD work.

    Wraps ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``; fused kernels (flash, memory
    efficient, CPU flash) have no forward-mode AD formula.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _broadcast_embeds(embeds: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3:
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"{name} must be a tensor of shape (n, L, D) from encode_prompt; got {shape}")
    if embeds.shape[0] == n:
        return embeds
    if embeds.shape[0] == 1:
        return embeds.expand(n, -1, -1)
    raise ValueError(
        f"{name} has batch size {embeds.shape[0]} but x has {n} samples; pass one embedding per sample or a single one (batch 1)"
    )


class TextToImageModel(nn.Module):
    """A diffusers text-to-image model seen as a conditional score model s(x; t, c).

    ``model(x, t, cond=None, uncond=None, guidance_scale=1.0)`` returns the guided score
    s_CFG(x; t, c) (see :meth:`forward`) and ``model.sde`` is its forward process: it is a
    conditional score model in lidmem's sense (``model(x, t, **extra_args)`` with ``.sde``), so
    the core estimators and samplers take it with ``extra_args={"cond": ..., ...}``.

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
        Predicts epsilon, v or x0 (from ``scheduler.config.prediction_type``) given
        ``(sample, timestep, encoder_hidden_states)``. ``torch.compile(unet)``, a subclass or any
        module with the UNet's ``.config`` (``in_channels``, ``sample_size``) returning a tensor,
        a tuple or an output object with ``.sample`` also work; a closure or function is refused
        with a ``TypeError`` (wrap it in :class:`lidmem.ScoreModel` instead).
    text_encoder : transformers.PreTrainedModel
        Its first output (``last_hidden_state``) is the conditioning, as in
        ``StableDiffusionPipeline.encode_prompt``.
    tokenizer : transformers tokenizer
        Prompts are padded to ``tokenizer.model_max_length`` and truncated.
    scheduler : diffusers scheduler with ``alphas_cumprod``
        Only its configuration is used (its real alpha-bar table and prediction type); sampling
        uses a private :class:`diffusers.DDIMScheduler` built from that configuration, so the
        given object is never mutated.
    vae : diffusers.AutoencoderKL, optional
        Present for latent diffusion; images are then encoded to latents.
    prediction : {"epsilon", "v", "x0"}, optional
        Overrides ``scheduler.config.prediction_type``.

    Attributes
    ----------
    sde : DDPMSchedule
        Built from ``scheduler.alphas_cumprod`` (App. D.1).
    prediction : str
        The lidmem name of what the UNet predicts.
    sample_shape : tuple of int
        ``(c, h, w)`` of the UNet's input (latents for latent models).
    """

    def __init__(
        self,
        unet: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler: Any,
        vae: nn.Module | None = None,
        *,
        prediction: str | None = None,
    ) -> None:
        super().__init__()
        cfg = getattr(unet, "config", None)
        if not isinstance(unet, nn.Module) or getattr(cfg, "in_channels", None) is None or getattr(cfg, "sample_size", None) is None:
            raise TypeError(
                f"unet must be a diffusers UNet2DConditionModel (torch.compile(unet) and subclasses are fine), or an nn.Module "
                f"called as unet(x, timestep, encoder_hidden_states=...) with the UNet's .config (in_channels, sample_size); "
                f"got {type(unet).__name__}{'' if cfg is None or not isinstance(unet, nn.Module) else ' whose .config lacks in_channels / sample_size'}. "
                "For a closure, function or your own guidance use lidmem.ScoreModel(fn, DDPMSchedule.from_scheduler(scheduler), "
                "prediction='epsilon') and pass the conditioning in extra_args"
            )
        if not isinstance(text_encoder, nn.Module):
            raise TypeError(f"text_encoder must be a torch.nn.Module (a transformers model); got {type(text_encoder).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")
        if vae is not None and not isinstance(vae, nn.Module):
            raise TypeError(f"vae must be a diffusers AutoencoderKL or None; got {type(vae).__name__}")
        self.sde = DDPMSchedule.from_scheduler(scheduler)
        if prediction is None:
            ptype = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
            if ptype not in PREDICTION_TYPES:
                raise ValueError(f"scheduler.config.prediction_type={ptype!r} is not supported; expected one of {sorted(PREDICTION_TYPES)}")
            prediction = PREDICTION_TYPES[ptype]
        elif prediction not in PREDICTION_TYPES.values():
            raise ValueError(f"prediction={prediction!r} is not supported; choose one of 'epsilon', 'v', 'x0'")
        self.prediction = prediction
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler.config)
        self.scheduler_class = type(scheduler).__name__
        cfg = unet.config
        size = cfg.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.sample_shape: tuple[int, int, int] = (int(cfg.in_channels), int(h), int(w))
        if vae is not None and int(vae.config.latent_channels) != self.sample_shape[0]:
            raise ValueError(
                f"vae.config.latent_channels={vae.config.latent_channels} differs from unet.config.in_channels={cfg.in_channels}"
            )

    # ------------------------------------------------------------------ basics
    @classmethod
    def from_pipeline(cls, pipeline: Any, *, prediction: str | None = None) -> "TextToImageModel":
        """Wrap a loaded diffusers ``StableDiffusionPipeline`` (or any pipeline with the same components)."""
        return cls(
            pipeline.unet,
            pipeline.text_encoder,
            pipeline.tokenizer,
            pipeline.scheduler,
            getattr(pipeline, "vae", None),
            prediction=prediction,
        )

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def dim(self) -> int:
        """Ambient dimension d of the model space (``prod(sample_shape)``)."""
        return math.prod(self.sample_shape)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(c, H, W)`` of pixel images: the VAE's native resolution, or ``sample_shape``."""
        if self.vae is None:
            return self.sample_shape
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.in_channels), self.sample_shape[1] * f, self.sample_shape[2] * f)

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    def __repr__(self) -> str:
        return (
            f"TextToImageModel(sample_shape={self.sample_shape}, prediction={self.prediction!r}, "
            f"latent={self.is_latent}, num_train_timesteps={self.sde.num_train_timesteps}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ text
    def tokenize(self, prompt: str | Sequence[str]) -> torch.Tensor:
        """Token ids ``(n, L)`` padded to ``tokenizer.model_max_length`` (diffusers' encode_prompt)."""
        prompts = _as_prompt_list(prompt, "prompt")
        out = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return out.input_ids

    def _encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = (ids != self.tokenizer.pad_token_id).long().to(self.device)
        emb = self.text_encoder(ids.to(self.device), attention_mask=attention_mask)[0]
        return emb.to(dtype=self.dtype)

    def encode_prompt(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-encoder output embeddings of the prompts and of the unconditional/negative prompts.

        Follows ``StableDiffusionPipeline.encode_prompt`` (padding to ``model_max_length``,
        truncation, ``text_encoder(ids)[0]``, attention mask only when the encoder's config asks
        for it) without its private helpers.

        Parameters
        ----------
        prompt : str or list of str
        negative_prompt : str or list of str, optional
            Defaults to ``""`` for every prompt (the unconditional embedding).

        Returns
        -------
        prompt_embeds, negative_prompt_embeds : Tensor of shape (n, L, D)
            In the UNet's dtype and on its device, without gradient.
        """
        prompts = _as_prompt_list(prompt, "prompt")
        if negative_prompt is None:
            negs = [""] * len(prompts)
        else:
            negs = _as_prompt_list(negative_prompt, "negative_prompt")
            if len(negs) == 1 and len(prompts) > 1:
                negs = negs * len(prompts)
            if len(negs) != len(prompts):
                raise ValueError(f"negative_prompt has {len(negs)} entries but prompt has {len(prompts)}; pass one per prompt or a single string")
        with torch.no_grad():
            cond = self._encode_ids(self.tokenize(prompts))
            uncond = self._encode_ids(self.tokenize(negs))
        return cond, uncond

    def unconditional_embeds(self, n: int = 1) -> torch.Tensor:
        """Embeddings of the empty prompt, shape ``(n, L, D)``."""
        return self.encode_prompt([""] * check_positive_int(n, "n"))[0]

    # ------------------------------------------------------------------ images
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Map pixel images in [-1, 1] ``(n, 3, H, W)`` to model space.

        With a VAE: posterior mean times ``scaling_factor`` (minus ``shift_factor`` first, where
        the VAE has one). Without: the images themselves (checked against ``sample_shape``).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a tensor of shape (n, c, H, W) in [-1, 1]; got {getattr(images, 'shape', type(images).__name__)}")
        images = images.to(device=self.device, dtype=self.dtype)
        if self.vae is None:
            if tuple(images.shape[1:]) != self.sample_shape:
                raise ValueError(f"images have shape {tuple(images.shape[1:])} but this pixel-space model takes {self.sample_shape}")
            return images
        with torch.no_grad():
            z = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((z - shift) * self.vae.config.scaling_factor).to(self.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Map model-space samples to pixel images in [-1, 1] (identity without a VAE)."""
        if self.vae is None:
            return x
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        with torch.no_grad():
            return self.vae.decode((x / self.vae.config.scaling_factor + shift).to(self.vae.dtype)).sample

    # ------------------------------------------------------------------ network
    def _times(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            return torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
        if t.ndim == 0:
            return t.reshape(1).expand(x.shape[0]).to(device=x.device)
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a float or a tensor of shape (n,)=({x.shape[0]},); got shape {tuple(t.shape)}")
        return t.to(device=x.device)

    def unet_output(self, x: torch.Tensor, t: float | torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Raw UNet output (epsilon / v / x0) at continuous time ``t`` for conditioning ``embeds``."""
        tt = self._times(x, t)
        emb = _broadcast_embeds(embeds, x.shape[0], "embeds").to(x.dtype)
        tau = self.sde.model_time(tt.double()).to(torch.float32)
        return network_output(self.unet(x, tau, encoder_hidden_states=emb), self.unet)

    def branch_outputs(
        self, x: torch.Tensor, t: float | torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out_uncond, out_cond)``: both CFG branches from one UNet batch ``[uncond, cond]``.

        This is the one place that fixes the order of the halves (diffusers'
        ``noise_pred.chunk(2)`` gives ``noise_pred_uncond, noise_pred_text``).
        """
        n = x.shape[0]
        tt = self._times(x, t)
        c = _broadcast_embeds(cond, n, "cond")
        u = _broadcast_embeds(uncond, n, "uncond")
        out = self.unet_output(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([u, c]))
        out_uncond, out_cond = out.chunk(2)
        return out_uncond, out_cond

    def guided_output(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor,
        cond: torch.Tensor | None,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Raw output of the CFG combination ``out_u + lambda (out_c - out_u)``.

        ``guidance_scale=1`` calls only the conditional branch, ``cond=None`` or
        ``guidance_scale=0`` only the unconditional one (exactly equal to the combination).
        """
        lam = float(guidance_scale)
        if not math.isfinite(lam):
            raise ValueError(f"guidance_scale={guidance_scale!r} must be finite; diffusers' default for SD is 7.5")
        if cond is None or lam == 0.0:
            if uncond is None:
                uncond = self.unconditional_embeds(1)
            return self.unet_output(x, t, uncond)
        if lam == 1.0:
            return self.unet_output(x, t, cond)
        if uncond is None:
            uncond = self.unconditional_embeds(1)
        out_u, out_c = self.branch_outputs(x, t, cond, uncond)
        return out_u + lam * (out_c - out_u)

    def output_to_score(self, out: torch.Tensor, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Convert a raw UNet output to the score (eq. 10 for epsilon)."""
        tt = self._times(x, t)
        sigma = append_dims(self.sde.sigma(tt.double()).to(x.dtype), x.ndim)
        psi = append_dims(self.sde.psi(tt.double()).to(x.dtype), x.ndim)
        return prediction_to_score(self.prediction, out, x, psi, sigma)

    def output_to_epsilon(self, out: torch.Tensor, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Convert a raw UNet output to epsilon = -sigma(t) s."""
        if self.prediction == "epsilon":
            return out
        tt = self._times(x, t)
        sigma = append_dims(self.sde.sigma(tt.double()).to(x.dtype), x.ndim)
        return -sigma * self.output_to_score(out, x, tt)

    def forward(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor,
        cond: torch.Tensor | None = None,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Score s_CFG(x; t, c) = (1 - lambda) s(x; t, empty) + lambda s(x; t, c), shape of ``x``.

        Parameters
        ----------
        x : Tensor of shape (n, *sample_shape)
        t : float or Tensor of shape (n,)
            Continuous time in [0, 1].
        cond, uncond : Tensor of shape (n or 1, L, D), optional
            Prompt and unconditional (negative) embeddings from :meth:`encode_prompt`.
            ``cond=None`` gives the unconditional score s(x; t, empty); ``uncond=None`` the
            empty prompt's embedding (encoded on every call: pass it when calling often).
        guidance_scale : float, default=1.0
            lambda; 1 is the plain conditional score. Derivatives with respect to ``x`` go
            through BOTH branches: (1 - lambda) grad s(., empty) + lambda grad s(., c).
        """
        return self.output_to_score(self.guided_output(x, t, cond, uncond, guidance_scale), x, t)

    #: Same as calling the model (:meth:`forward`): s_CFG(x; t, c).
    score = forward

    def epsilon(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor,
        cond: torch.Tensor | None,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Guided noise prediction eps_CFG = -sigma(t) s_CFG (diffusers' guided ``noise_pred``)."""
        return self.output_to_epsilon(self.guided_output(x, t, cond, uncond, guidance_scale), x, t)

    def branch_epsilons(
        self, x: torch.Tensor, t: float | torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_uncond, eps_cond)`` from one ``[uncond, cond]`` batch."""
        out_u, out_c = self.branch_outputs(x, t, cond, uncond)
        return self.output_to_epsilon(out_u, x, t), self.output_to_epsilon(out_c, x, t)

    # ------------------------------------------------------------------ sampling
    def ddim_scheduler(self, num_inference_steps: int) -> Any:
        """A fresh DDIMScheduler from this model's scheduler config, with timesteps set."""
        from diffusers import DDIMScheduler

        ptype = {v: k for k, v in PREDICTION_TYPES.items()}[self.prediction]  # an override reaches the sampler too
        sch = DDIMScheduler.from_config(self.scheduler_config, prediction_type=ptype)
        sch.set_timesteps(check_positive_int(num_inference_steps, "num_inference_steps"), device=self.device)
        return sch

    def timestep_to_time(self, timestep: int | torch.Tensor) -> float:
        """Continuous t in [0, 1] of an integer diffusers timestep k: t = k / (N - 1)."""
        return float(timestep) / (self.sde.num_train_timesteps - 1)

    def initial_noise(self, n: int, seed: int | torch.Generator | None) -> torch.Tensor:
        """Standard normal ``(n, *sample_shape)`` drawn on the CPU (device independent) from ``seed``."""
        g = make_generator(seed)
        return torch.randn((n, *self.sample_shape), generator=g).to(device=self.device, dtype=self.dtype)

    def sample(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor | None = None,
        *,
        n: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        seed: int | torch.Generator | None = 0,
        latents: torch.Tensor | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """DDIM (eta = 0) with classifier-free guidance, as ``StableDiffusionPipeline.__call__``.

        Parameters
        ----------
        cond, uncond : Tensor of shape (n or 1, L, D)
            From :meth:`encode_prompt`; ``uncond=None`` uses the empty prompt.
        n : int, optional
            Number of samples (default: ``cond``'s batch size).
        latents : Tensor of shape (n, *sample_shape), optional
            Initial noise (default: drawn from ``seed``).
        callback : callable, optional
            Called at every step with a dict ``{"step", "timestep", "t", "x", "eps_uncond",
            "eps_cond", "eps"}`` (x is the state the UNet sees at continuous time t).

        Returns
        -------
        Tensor of shape (n, *sample_shape)
            Final model-space samples (latents for latent models; see :meth:`decode`).
        """
        from ..utils import progress as _progress

        n = cond.shape[0] if n is None else check_positive_int(n, "n")
        if uncond is None:
            uncond = self.unconditional_embeds(1)
        lam = float(guidance_scale)
        sch = self.ddim_scheduler(num_inference_steps)
        x = self.initial_noise(n, seed) if latents is None else latents.to(device=self.device, dtype=self.dtype)
        x = x * sch.init_noise_sigma
        for i, k in enumerate(_progress(sch.timesteps, desc="DDIM", disable=None if progress is None else not progress)):
            t = self.timestep_to_time(k)
            with torch.no_grad():
                out_u, out_c = self.branch_outputs(x, t, cond, uncond)
                out = out_u + lam * (out_c - out_u)
            if callback is not None:
                callback(
                    {
                        "step": i,
                        "timestep": int(k),
                        "t": t,
                        "x": x,
                        "eps_uncond": self.output_to_epsilon(out_u, x, t),
                        "eps_cond": self.output_to_epsilon(out_c, x, t),
                        "eps": self.output_to_epsilon(out, x, t),
                    }
                )
            x = sch.step(out, k, x, eta=0.0).prev_sample
        return x

    def generate(
        self,
        prompt: str | Sequence[str] | None = None,
        *,
        prompt_embeds: torch.Tensor | None = None,
        n_per_prompt: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        seed: int | torch.Generator | None = 0,
        decode: bool = True,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Generate ``n_per_prompt`` images per prompt (or per row of ``prompt_embeds``).

        Returns pixel images in [-1, 1] ``(n_prompts * n_per_prompt, c, H, W)`` when ``decode``
        (identity for pixel models), else model-space samples. Rows are grouped by prompt.
        """
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt= or prompt_embeds=")
        k = check_positive_int(n_per_prompt, "n_per_prompt")
        if prompt_embeds is None:
            cond, _ = self.encode_prompt(prompt)
        else:
            cond = prompt_embeds
        cond = cond.repeat_interleave(k, dim=0)
        x = self.sample(cond, None, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed, progress=progress)
        return self.decode(x) if decode else x


def _as_prompt_list(prompt: Any, name: str) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, Sequence) and all(isinstance(p, str) for p in prompt) and len(prompt) > 0:
        return list(prompt)
    raise TypeError(f"{name} must be a string or a non-empty list of strings; got {type(prompt).__name__}")
