"""Copy detection: the nearest training image of each generated sample, and whether it is a copy.

Two matchings (Section 4.1 and App. F of the paper):

1. **Calibrated l2** (Carlini et al. 2023, as used by the paper's public code): for a sample ``s``
   with nearest training image ``x_j`` (plain l2 on flattened pixels),

       calibrated_l2(s) = ||s - x_j|| / mean_{i=1..k} ||x_j - x_j^(i)||

   where ``x_j^(i)`` are the ``k`` nearest *distinct* training images of ``x_j`` (exact duplicates
   of ``x_j`` are skipped, so a training set with planted duplicates still calibrates: otherwise
   the denominator would be 0). The public code used ``k = 1``; ``k`` is a parameter here.
   A value near 0 means the sample sits much closer to ``x_j`` than ``x_j``'s own neighbours do.
2. **Embedding cosine similarity** (the paper used SSCD): cosine similarity between the sample's
   and the training images' embeddings, maximised over the training set. The embedder is
   pluggable (:class:`Embedder`); the default :class:`PCAEmbedder` is fitted on the distinct
   training images (PCA-whitened, centred pixels), offline and deterministic.

Labels (thresholds are parameters, defaults documented in :func:`find_copies`):

- ``"exact_copy"``: ``calibrated_l2 <= exact_threshold`` (default 0.3);
- ``"near_copy"``: otherwise, ``calibrated_l2 <= near_threshold`` (default 0.5) or
  ``embed_cos >= cos_threshold`` (default 0.97);
- ``"none"``: everything else.

Search: exact (chunked ``torch.cdist``) for small problems, a faiss IVF-Flat index (approximate;
``pip install lidmem[faiss]``) when ``n_train * n_samples`` exceeds ``ann_threshold``;
``search="exact" | "faiss" | "auto"`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .._validation import check_positive_int, renamed_argument
from ..neighbors import SEARCHES, _resolve_search, calibration_distances, dedupe_rows, nearest_neighbors, train_ivf_index  # noqa: F401 (re-exported)

__all__ = [
    "Embedder",
    "PCAEmbedder",
    "CopyMatches",
    "COPY_LABELS",
    "find_copies",
    "nearest_neighbors",
    "train_ivf_index",
    "dedupe_rows",
    "calibration_distances",
    "label_copies",
]

COPY_LABELS = ("exact_copy", "near_copy", "none")


@runtime_checkable
class Embedder(Protocol):
    """An image embedder: ``fit(train)`` once, then ``transform(images) -> (n, e)``.

    Both take float arrays of shape ``(n, c, h, w)`` in [-1, 1] (lidmem's image convention).
    Cosine similarity is computed on the returned vectors.
    """

    def fit(self, images: np.ndarray) -> "Embedder": ...

    def transform(self, images: np.ndarray) -> np.ndarray: ...


class PCAEmbedder:
    """Default embedder: centred, PCA-whitened pixels (fitted on the training images).

    Whitening gives every principal direction of the training set equal weight, so the cosine
    similarity compares image *structure* rather than overall brightness (the mean image is
    subtracted first). Deterministic (full SVD).

    Parameters
    ----------
    n_components : int, default=32
        Number of principal components kept (clipped to ``min(n_train, n_pixels)`` at fit
        time; the value actually used is ``n_components_``).
    eps : float, default=1e-6
        Added to the standard deviations before whitening.
    """

    def __init__(self, n_components: int = 32, *, eps: float = 1e-6) -> None:
        self.n_components = n_components
        self.eps = eps

    def fit(self, images: np.ndarray) -> "PCAEmbedder":
        x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        k = check_positive_int(self.n_components, "n_components")
        self.mean_ = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.n_components_ = min(k, vt.shape[0])
        self.components_ = vt[: self.n_components_]
        self.scale_ = s[: self.n_components_] / np.sqrt(max(len(x) - 1, 1)) + self.eps
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        if not hasattr(self, "components_"):
            raise ValueError("PCAEmbedder is not fitted; call fit(train_images) first")
        x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"images have {x.shape[1]} pixels but the embedder was fitted on {self.mean_.shape[0]}")
        return ((x - self.mean_) @ self.components_.T / self.scale_).astype(np.float32)

    def __repr__(self) -> str:
        return f"PCAEmbedder(n_components={self.n_components})"


@dataclass
class CopyMatches:
    """Result of :func:`find_copies` (one entry per sample).

    Attributes
    ----------
    nn_index : ndarray of shape (n,), int64
        Row of the nearest training image in l2 (the first row among exact duplicates).
    l2 : ndarray of shape (n,)
        Plain l2 distance to it (flattened pixels).
    calibrated_l2 : ndarray of shape (n,)
        ``l2`` divided by the mean l2 from that training image to its ``k`` nearest distinct
        training images (low = copy).
    embed_index : ndarray of shape (n,), int64
        Row of the training image with the highest embedding cosine similarity.
    embed_cos : ndarray of shape (n,)
        That cosine similarity (high = copy).
    labels : ndarray of shape (n,), str
        ``"exact_copy"``, ``"near_copy"`` or ``"none"``.
    thresholds : dict
        ``exact_threshold``, ``near_threshold``, ``cos_threshold`` used for the labels.
    settings : dict
        ``k``, the search actually used, the embedder, numbers of (distinct) training images.
    """

    nn_index: np.ndarray
    l2: np.ndarray
    calibrated_l2: np.ndarray
    embed_index: np.ndarray
    embed_cos: np.ndarray
    labels: np.ndarray
    thresholds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def is_copy(self) -> np.ndarray:
        """Boolean ``(n,)``: labelled exact or near copy."""
        return self.labels != "none"


def _flat(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be batch-first with at least one row, e.g. shape (n, c, h, w); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric; got dtype {arr.dtype}")
    arr = arr.reshape(len(arr), -1).astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def label_copies(
    calibrated_l2: np.ndarray,
    embed_cos: np.ndarray,
    *,
    exact_threshold: float = 0.3,
    near_threshold: float = 0.5,
    cos_threshold: float = 0.97,
) -> np.ndarray:
    """Copy labels from the two scores (see the module docstring); returns str array ``(n,)``."""
    if not (0 <= exact_threshold <= near_threshold):
        raise ValueError(f"need 0 <= exact_threshold <= near_threshold; got {exact_threshold} and {near_threshold}")
    if not (-1.0 <= cos_threshold <= 1.0):
        raise ValueError(f"cos_threshold={cos_threshold} must lie in [-1, 1]")
    c = np.asarray(calibrated_l2, dtype=np.float64)
    e = np.asarray(embed_cos, dtype=np.float64)
    labels = np.full(c.shape, "none", dtype=object)
    labels[(c <= near_threshold) | (e >= cos_threshold)] = "near_copy"
    labels[c <= exact_threshold] = "exact_copy"
    return labels.astype(str)


def find_copies(
    samples: Any,
    train: Any,
    *,
    k: int = 5,
    embedder: Embedder | None = None,
    exact_threshold: float = 0.3,
    near_threshold: float = 0.5,
    cos_threshold: float = 0.97,
    search: str = "auto",
    ann_threshold: int = 50_000_000,
    batch_size: int | None = None,
    chunk_size: int | None = None,
) -> CopyMatches:
    """Match every sample to its nearest training image and label copies.

    Parameters
    ----------
    samples : array-like of shape (n, c, h, w) or (n, d)
        Generated images (lidmem convention: [-1, 1]; any scale works for l2 as long as the
        training images share it).
    train : array-like of shape (m, c, h, w) or (m, d)
        Training images; may contain exact duplicates.
    k : int, default=5
        Neighbours used by the calibration (the public CIFAR code used 1).
    embedder : Embedder, optional
        Fitted here on the distinct training images (reshaped to ``train``'s shape). Default
        :class:`PCAEmbedder` ``(n_components=32)``.
    exact_threshold : float, default=0.3
        ``calibrated_l2 <= exact_threshold`` -> ``"exact_copy"``: the sample is more than 3x closer
        to its match than the match's own neighbours are (a copy up to sampling noise: for the
        digits UNet, reproduced planted duplicates sit at 0.1-0.3, i.e. within about half a grey
        level per pixel, while distinct training digits are at >= 1 from each other by definition).
    near_threshold : float, default=0.5
        ``calibrated_l2 <= near_threshold`` -> ``"near_copy"`` (a reconstructive copy).
    cos_threshold : float, default=0.97
        ``embed_cos >= cos_threshold`` -> ``"near_copy"`` as well.
    search : {"auto", "exact", "faiss"}, default="auto"
        See :func:`nearest_neighbors`.
    ann_threshold : int, default=50_000_000
        ``"auto"`` switches to faiss above this many sample-training pairs.
    batch_size : int or None, default=None
        Samples per exact-search block (see :func:`nearest_neighbors`; None bounds memory).
    chunk_size : int or None
        Deprecated alias of ``batch_size``.

    Returns
    -------
    CopyMatches
    """
    batch_size = renamed_argument(batch_size, chunk_size, new="batch_size", old="chunk_size", func="find_copies")
    s = _flat(samples, "samples")
    t = _flat(train, "train")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"samples have {s.shape[1]} values per image but training images have {t.shape[1]}; they must share one shape")
    k = check_positive_int(k, "k")
    uniq_first, _, counts = dedupe_rows(t)
    tu = t[uniq_first]
    used = _resolve_search(search, len(tu), len(s), ann_threshold)
    d1, i1 = nearest_neighbors(s, tu, 1, search=used, batch_size=batch_size)
    d1, i1 = d1[:, 0], i1[:, 0]
    matched = np.unique(i1)
    denom = calibration_distances(tu, matched, k, search=used)
    lookup = dict(zip(matched.tolist(), denom.tolist()))
    cal = d1 / np.array([lookup[j] for j in i1.tolist()])

    emb = embedder if embedder is not None else PCAEmbedder()
    if not isinstance(emb, Embedder):
        raise TypeError(f"embedder must have fit(images) and transform(images) methods; got {type(emb).__name__}")
    train_shape = np.asarray(train).shape if not isinstance(train, torch.Tensor) else tuple(train.shape)
    img_shape = tuple(train_shape[1:])
    emb.fit(tu.reshape((len(tu), *img_shape)))
    eu = np.asarray(emb.transform(tu.reshape((len(tu), *img_shape))), dtype=np.float32)
    es = np.asarray(emb.transform(s.reshape((len(s), *img_shape))), dtype=np.float32)
    eu /= np.linalg.norm(eu, axis=1, keepdims=True).clip(1e-12)
    es /= np.linalg.norm(es, axis=1, keepdims=True).clip(1e-12)
    c1, j1 = nearest_neighbors(es, eu, 1, metric="ip", search=used, batch_size=batch_size)
    labels = label_copies(cal, c1[:, 0], exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold)
    return CopyMatches(
        nn_index=uniq_first[i1],
        l2=d1,
        calibrated_l2=cal,
        embed_index=uniq_first[j1[:, 0]],
        embed_cos=np.clip(c1[:, 0], -1.0, 1.0),
        labels=labels,
        thresholds={"exact_threshold": float(exact_threshold), "near_threshold": float(near_threshold), "cos_threshold": float(cos_threshold)},
        settings={
            "k": k,
            "search": used,
            "embedder": repr(emb),
            "n_train": int(len(t)),
            "n_train_distinct": int(len(tu)),
            "n_train_duplicated_rows": int(counts[counts > 1].sum()),
        },
    )
