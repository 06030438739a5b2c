"""matplotlib figures for memorization reports (Agg backend; figures are returned, not shown).

One look for every lidmem figure: memorized / copied / duplicated points are red, others blue
(:data:`LABEL_COLORS`), every axis is labelled, and every score panel says which direction means
"memorized" (e.g. "← memorized" under a score where low values flag memorization).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LABEL_COLORS", "DISPLAY_NAMES", "display_name", "histograms_by_label", "match_grid", "score_histograms",
    "mitigation_figure", "attribution_figure", "monitor_figure",
]

#: Colour of each label, shared by every figure (memorized-like labels red, others blue).
LABEL_COLORS = {
    "exact_copy": "#d62728", "near_copy": "#ff7f0e", "none": "#1f77b4",
    "memorized": "#d62728", "duplicated": "#d62728", "other": "#1f77b4",
    "attribution": "#d62728", "uniform": "#1f77b4", "rta": "#2ca02c", "original": "#555555",
}

#: Axis names of the score columns lidmem writes.
DISPLAY_NAMES = {
    "lid_theta_flipd": r"LID$_\theta$ (FLIPD)",
    "lid_theta_nb": r"LID$_\theta$ (normal bundle)",
    "lid_theta_png": r"FLIPD / PNG length",
    "lid_theta_jacobian": r"LID$_\theta$ (Jacobian rank)",
    "lid_star": r"LID$_*$ of the matched training image",
    "a_cfg": r"$A^{\mathrm{CFG}}$",
    "a_scfg": r"$A^{s_{\mathrm{CFG}}}$",
    "a_flipd": r"$A^{\mathrm{FLIPD}}$",
    "wen": "Wen et al. per-step CFG norm",
    "flipd_uncond": "caption-free FLIPD",
    "flipd_cond": "conditional FLIPD",
    "cfg_norm": "CFG norm after 3 Euler steps",
    "similarity": "similarity to the memorized image",
    "alignment": "alignment with the prompt",
}


def display_name(column: str) -> str:
    """Axis label of a score column (the column name itself when it has none)."""
    return DISPLAY_NAMES.get(column, column)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
        "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
    })
    return plt


def _direction(ax: Any, low_is_memorized: bool | None, what: str = "memorized") -> None:
    """Write "← memorized" (bottom left) or "memorized →" (bottom right) under the x axis."""
    if low_is_memorized is None:
        return
    text, x, ha = (f"← {what}", 0.0, "left") if low_is_memorized else (f"{what} →", 1.0, "right")
    ax.annotate(text, xy=(x, 0), xycoords="axes fraction", xytext=(0, -30), textcoords="offset points",
                ha=ha, va="top", fontsize=8, color=LABEL_COLORS["memorized"])


def _grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Any, Any]:
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(max(n, 1) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def score_histograms(
    values: dict[str, np.ndarray],
    labels: np.ndarray | None,
    *,
    positive: str = "memorized",
    negative: str = "other",
    low_is_positive: dict[str, bool] | None = None,
    ncols: int = 2,
    bins: int = 20,
) -> Any:
    """One histogram panel per score, split by a boolean label (``positive`` in red).

    ``values`` maps column -> array of shape (n,); ``labels`` is a boolean array (n,) or None
    (one unsplit histogram per score). ``low_is_positive[col]`` says which direction means
    ``positive`` (shown under the axis). Returns a matplotlib Figure.
    """
    fig, axes = _grid(len(values), ncols, (4.2, 3.1))
    low_is_positive = low_is_positive or {}
    for ax, (col, vals) in zip(axes, values.items()):
        v = np.asarray(vals, dtype=float)
        finite = np.isfinite(v)
        edges = np.histogram_bin_edges(v[finite], bins=bins) if finite.any() and np.ptp(v[finite]) > 0 else bins
        if labels is None:
            ax.hist(v[finite], bins=edges, color=LABEL_COLORS["other"])
            ax.set_ylabel("count")
        else:
            lab = np.asarray(labels, dtype=bool)
            for name, mask in ((negative, ~lab), (positive, lab)):
                sel = v[mask & finite]
                if sel.size:
                    ax.hist(sel, bins=edges, alpha=0.6, density=True, color=LABEL_COLORS.get(name, LABEL_COLORS["other"]),
                            label=f"{name} (n={sel.size})")
            ax.set_ylabel("density")
        ax.set_xlabel(display_name(col))
        _direction(ax, low_is_positive.get(col), positive)
    fig.tight_layout()
    if labels is not None and len(values):
        # one legend for all panels, above them (never on top of the bars)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(names), frameon=False)
    return fig


def histograms_by_label(df: Any, columns: list[str], *, label_column: str = "copy_label", bins: int = 30,
                        low_is_copy: bool = True, ncols: int = 3) -> Any:
    """One panel per column: histograms of its values per label (as the paper's Figure 5).

    Columns that are entirely NaN are skipped. Labels are coloured by :data:`LABEL_COLORS`;
    ``low_is_copy`` adds "← copy" under each axis. Returns a matplotlib Figure.
    """
    cols = [c for c in columns if c in df and np.isfinite(df[c].to_numpy(dtype=float)).any()]
    fig, axes = _grid(len(cols), ncols, (4.0, 3.0))
    for ax, col in zip(axes, cols):
        vals = df[col].to_numpy(dtype=float)
        finite = vals[np.isfinite(vals)]
        edges = np.histogram_bin_edges(finite, bins=bins) if finite.size and np.ptp(finite) > 0 else bins
        for lab in sorted(df[label_column].unique(), key=lambda s: list(LABEL_COLORS).index(s) if s in LABEL_COLORS else 99):
            v = vals[(df[label_column] == lab).to_numpy() & np.isfinite(vals)]
            if v.size:
                ax.hist(v, bins=edges, alpha=0.55, label=f"{lab.replace('_', ' ')} (n={v.size})", color=LABEL_COLORS.get(lab), density=True)
        ax.set_xlabel(display_name(col))
        ax.set_ylabel("density")
        ax.legend(frameon=False)
        _direction(ax, True if low_is_copy else None, "copy")
    fig.tight_layout()
    return fig


def _to_display(img: np.ndarray) -> np.ndarray:
    img = np.clip((np.asarray(img, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def match_grid(samples: np.ndarray, matches: np.ndarray, captions: list[str], *, ncols: int = 8,
               top_label: str = "sample", bottom_label: str = "nearest training image") -> Any:
    """Pairs of rows: generated samples (top) above their nearest training images (bottom).

    ``samples`` and ``matches`` have shape ``(m, c, h, w)`` in [-1, 1]; ``captions`` has ``m``
    strings (short; ``\\n`` allowed) shown above each sample. Returns a matplotlib Figure.
    """
    plt = _plt()
    m = len(samples)
    ncols = max(1, min(ncols, m))
    nblocks = int(np.ceil(m / ncols)) if m else 1
    # rows per block: sample, match, spacer (keeps the next block's captions off this block)
    ratios = [1.0, 1.0, 0.55] * nblocks
    fig, axes = plt.subplots(3 * nblocks, ncols, figsize=(1.25 * ncols + 0.9, 3.2 * nblocks), squeeze=False,
                             gridspec_kw={"height_ratios": ratios, "hspace": 0.08, "wspace": 0.08})
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
    for b in range(nblocks):
        for ax in axes[3 * b + 2]:
            ax.set_visible(False)
    grey = samples.shape[1] == 1 if m else True
    for i in range(m):
        r, c = 3 * (i // ncols), i % ncols
        axes[r, c].imshow(_to_display(samples[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r, c].set_title(captions[i], fontsize=7, linespacing=1.1)
        axes[r + 1, c].imshow(_to_display(matches[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
    for b in range(nblocks):
        axes[3 * b, 0].set_ylabel(top_label, fontsize=8)
        axes[3 * b + 1, 0].set_ylabel(bottom_label.replace(" ", "\n", 1), fontsize=8)
    return fig


def mitigation_figure(table: Any, columns: Sequence[str] = ("similarity", "alignment"), *, baseline: Any = None) -> Any:
    """Mean (± standard error when a ``<col>_se`` column exists) of each column against k, one
    line per method. ``table`` has columns ``method``, ``k`` and ``columns``; rows with method
    ``original`` (or ``baseline``, a dict column -> value) are drawn as a dashed line. k ticks
    are the measured integers. Returns a matplotlib Figure."""
    cols = [c for c in columns if c in table and np.isfinite(table[c].to_numpy(dtype=float)).any()]
    fig, axes = _grid(len(cols), len(cols), (4.3, 3.2))
    rest = table[table.method != "original"]
    ks = sorted({int(k) for k in rest["k"]})
    base = dict(baseline or {})
    orig = table[table.method == "original"]
    for c in cols:
        if c not in base and len(orig):
            base[c] = float(orig[c].mean())
    better = {"similarity": "lower = less copying", "alignment": "higher = closer to the prompt"}
    for ax, c in zip(axes, cols):
        for method in [m for m in ("attribution", "uniform", "rta") if m in set(rest.method)] + sorted(set(rest.method) - {"attribution", "uniform", "rta"}):
            g = rest[rest.method == method].groupby("k")
            mean = g[c].mean()
            se = g[f"{c}_se"].mean() if f"{c}_se" in rest else g[c].sem()
            ax.errorbar(mean.index.astype(int), mean.values, yerr=np.nan_to_num(se.values), marker="o", capsize=2,
                        color=LABEL_COLORS.get(method), label=method)
        if c in base:
            ax.axhline(base[c], color=LABEL_COLORS["original"], ls="--", lw=1, label="original prompt")
        ax.set_xticks(ks)
        ax.set_xlabel("k (tokens rewritten)")
        ax.set_ylabel(display_name(c))
        if c in better:
            ax.set_title(better[c], fontsize=8, color="#555")
    fig.tight_layout()
    if cols:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(names), frameon=False)
    return fig


def attribution_figure(words: Sequence[str], scores: Sequence[float], metric: str, *, highlight: str | None = None) -> Any:
    """Bar chart of per-word attribution scores of one prompt (``highlight`` in red)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.55 * len(words) + 1.0), 2.8))
    colors = [LABEL_COLORS["memorized"] if w == highlight else LABEL_COLORS["other"] for w in words]
    ax.bar(range(len(words)), scores, color=colors)
    ax.set_xticks(range(len(words)), list(words), rotation=45, ha="right")
    ax.set_ylabel(f"attribution to {display_name(metric)}")
    ax.set_xlabel("prompt word")
    fig.tight_layout()
    return fig


# --- figures of ``lidmem t2i`` (written as PNG files; the CLI draws nothing itself) -------------
def monitor_figure(log: Any, *, flagged: Sequence[int] | None = None, threshold: float | None = None) -> Any:
    """LID_theta of the monitor's probe images over training steps, and its signal.

    ``log`` is a :mod:`lidmem.monitor` log (DataFrame with ``step, image_id, split, lid, signal,
    memorizing``). Training probes are thin blue lines; ``flagged`` ids (default: those flagged at
    the last step) red; the held-out median, when logged, a dashed black line. The lower panel
    shows the signal per step, ``threshold`` dotted and alarm steps marked.
    """
    plt = _plt()
    tr = log[log["split"] == "train"]
    if flagged is None:
        last = tr[tr["step"] == tr["step"].max()]
        flagged = [int(i) for i in last.loc[last["flagged"].astype(bool), "image_id"]]
    red = set(int(i) for i in flagged)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lid = tr.pivot(index="step", columns="image_id", values="lid")
    for iid in lid.columns:
        if int(iid) not in red:
            ax.plot(lid.index, lid[iid], color=LABEL_COLORS["other"], lw=0.6, alpha=0.35)
    for iid in lid.columns:
        if int(iid) in red:
            ax.plot(lid.index, lid[iid], color=LABEL_COLORS["memorized"], lw=1.4, alpha=0.9)
    ho = log[log["split"] == "heldout"]
    if len(ho):
        med = ho.groupby("step")["lid"].median()
        ax.plot(med.index, med.values, "k--", lw=1.5, label="held-out median")
        ax.legend(loc="best", fontsize=8)
    ax.set_ylabel(r"LID$_\theta$ (FLIPD), low = memorized")
    ax.set_title(f"probe images ({lid.shape[1]} training, {len(red)} flagged in red)")
    sig = log.groupby("step").agg(signal=("signal", "first"), memorizing=("memorizing", "first"))
    bx.plot(sig.index, sig["signal"], "o-", color="#555555", ms=3)
    alarm = sig[sig["memorizing"].astype(bool)]
    if len(alarm):
        bx.plot(alarm.index, alarm["signal"], "o", color=LABEL_COLORS["memorized"], ms=5, label="alarm")
        bx.legend(loc="best", fontsize=8)
    if threshold is not None:
        bx.axhline(threshold, color="k", ls=":", lw=1)
    bx.set_xlabel("training step")
    bx.set_ylabel("signal")
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG at ``path`` (parent folders created) and close it."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def write_t2i_score_histograms(table: Any, columns: Sequence[str], path: str | Path, labels: Any = None) -> Path:
    """Histograms of text-to-image score columns of ``table`` (memorized red, others blue when
    ``labels`` is given; the direction of "memorized" under each axis), saved at ``path``."""
    from ..memorization.metrics import HIGHER_IS_MEMORIZED

    cols = list(columns)
    low = {c: not HIGHER_IS_MEMORIZED[c] for c in cols if c in HIGHER_IS_MEMORIZED}
    low.update({c: v for c, v in {"flipd_uncond": True, "flipd_cond": True, "cfg_norm": False}.items() if c in cols})
    lab = None if labels is None else labels.to_numpy(bool) if hasattr(labels, "to_numpy") else labels
    fig = score_histograms({c: table[c].to_numpy(dtype=float) for c in cols}, lab, low_is_positive=low, ncols=min(len(cols), 4))
    return save_figure(fig, path)


def write_attribution_figure(attribution: Any, path: str | Path) -> Path:
    """Bar chart of one :class:`lidmem.text2image.attribution` result's word scores (the top word
    highlighted), saved at ``path``."""
    a = attribution
    top = a.words[int(max(range(len(a.words)), key=lambda i: a.word_scores[i]))] if len(a.words) else None
    return save_figure(attribution_figure(a.words, a.word_scores, a.metric, highlight=top), path)


def write_mitigation_figure(table: Any, path: str | Path) -> Path:
    """:func:`mitigation_figure` of a mitigation table (``alignment`` only when measured), saved at ``path``."""
    cols = ["similarity"] + (["alignment"] if table["alignment"].notna().any() else [])
    return save_figure(mitigation_figure(table, cols), path)
