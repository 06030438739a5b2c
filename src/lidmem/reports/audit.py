"""The memorization audit's HTML report (``report.html``) and its JSON-safe summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..memorization.audit import AuditResult

__all__ = ["write_audit_report", "jsonable"]


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, tuples as lists, paths as str, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


_PLANTED_NAMES = {
    "n_train_rows_duplicated": "training rows that are planted duplicates",
    "n_distinct_duplicated": "distinct planted images",
    "n_exact_copies": "exact copies among the samples",
    "exact_copies_of_planted": "exact copies of a planted image",
    "distinct_planted_reproduced": "distinct planted images reproduced",
    "samples_matched_to_planted": "samples whose nearest training image is planted",
    "lid_star_zero_frac_duplicated_train": "share of duplicated training images with LID_* = 0",
    "lid_star_positive_frac_other_train": "share of other training images with LID_* > 0",
}

_SCORE_NAMES = {
    "lid_theta_flipd": "LID_theta, FLIPD", "lid_theta_nb": "LID_theta, normal bundle", "lid_theta_png": "FLIPD / PNG length",
    "lid_theta_jacobian": "LID_theta, Jacobian rank", "lid_star": "LID_* of the matched training image",
}


def _timings_text(timings: dict[str, Any]) -> str:
    parts = [f"{k.removesuffix('_s').replace('_', ' ')} {float(v):.1f} s" for k, v in timings.items()]
    return "run time: " + ", ".join(parts) if parts else ""


#: Fewer audited samples than this: the report shows raw maps (too few references for a per-pixel median / MAD).
_MIN_MAP_REFERENCE = 20

_LEVEL_COLOURS = {"ok": "#e6f4e6", "caution": "#fff4d6", "unreliable": "#fde2e2"}


def _reliability_section(rel: dict[str, Any]) -> Any:
    """The report's opening panel: the verdict, its measured quantities and the warnings."""
    import html

    from .html import Section, format_value, table_to_html

    oor, scale = rel["samples_out_of_range"], rel["lid_theta_scale"]
    est = {"lid_theta_flipd": "FLIPD", "lid_theta_jacobian": "Jacobian rank"}.get(scale["estimator"], scale["estimator"])
    comparable = rel.get("mmh_comparable")
    rows = [
        {"check": "samples outside the data range", "value": f"{oor['n']} ({100.0 * oor['fraction']:.0f}%)",
         "reads": f"too weak above {100.0 * oor['too_weak_above']:.0f}%, caution above {100.0 * oor['caution_above']:.0f}%"},
        {"check": f"{est} median vs d", "value": f"{format_value(scale['median'], float_format='{:.3g}')} at d = {scale['d']}",
         "reads": "on scale (in [0, d])" if scale["on_scale"] else "off scale: a ranking, not a dimension"},
        {"check": f"samples with {est} outside [0, d]",
         "value": "" if scale["fraction_outside_0_d"] is None else f"{100.0 * scale['fraction_outside_0_d']:.0f}%", "reads": ""},
        {"check": "MMH comparability", "value": {True: "comparable", False: "not comparable", None: "-"}[comparable],
         "reads": "" if rel.get("mmh_scale_offset") is None else f"scale offset {float(rel['mmh_scale_offset']):+.2f}"},
        {"check": "copies (exact or near)", "value": str(rel["n_copies"]), "reads": f"intervals unreliable below {rel['min_positives']}"},
        {"check": "exact copies", "value": str(rel["n_exact_copies"]), "reads": ""},
    ]
    colour = _LEVEL_COLOURS.get(rel["level"], "#eee")
    body = (f'<p style="background:{colour};padding:.5em .8em;border:1px solid #aaa;font-size:1.1em"><b>Verdict: '
            f'{html.escape(rel["verdict"])}</b></p>' + table_to_html(rows))
    if rel["warnings"]:
        body += "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in rel["warnings"]) + "</ul>"
    return Section("Reliability", body, note="The same checks are in summary.json under \"reliability\".")


def _with_interval(rows: Any, value: str, interval: str) -> Any:
    """The column ``value`` as text ``0.912 [0.871, 0.950]`` with its interval column (dropped)."""
    from ..memorization.metrics import format_with_interval

    if interval not in rows:
        return rows
    text = [format_with_interval(v, ci) for v, ci in zip(rows[value], rows[interval])]
    return rows.assign(**{value: text}).drop(columns=[interval])


def write_audit_report(result: AuditResult, path: str | Path, *, n_grid: int = 24) -> Path:
    """Write ``report.html``: the reliability panel (verdict and warnings), headline counts, the
    detection table with 95% bootstrap intervals, LID histograms per copy label (as the paper's
    Figure 5), the samples closest to a training image beside their matches, and the settings."""
    import pandas as pd

    from .figures import histograms_by_label, match_grid
    from .html import Section, figure_to_html, format_value, settings_table, table_to_html, write_html_report

    df, s = result.samples, result.summary
    counts = s["copy_label_counts"]
    n_copies = int(counts.get("exact_copy", 0)) + int(counts.get("near_copy", 0))
    primary = s["primary_lid_theta"]
    sections = []
    if "reliability" in s:
        sections.append(_reliability_section(s["reliability"]))
    mmh_counts = s.get("mmh_class_counts", {})
    headline = [
        {"quantity": "samples", "value": int(s["n_samples"])},
        {"quantity": "training images", "value": int(s["n_train"])},
        {"quantity": "exact copies", "value": int(counts.get("exact_copy", 0))},
        {"quantity": "near copies", "value": int(counts.get("near_copy", 0))},
        {"quantity": "no copy", "value": int(counts.get("none", 0))},
    ] + [{"quantity": f"MMH class {k}", "value": int(v)} for k, v in mmh_counts.items()]
    cd = s["settings"]["copy_detection"]
    sections.append(Section(
        "Summary", table_to_html(headline),
        note=(f"Copy labels: exact copy if calibrated l2 < {format_value(cd.get('exact_threshold'))}, near copy if calibrated "
              f"l2 < {format_value(cd.get('near_threshold'))} or embedding cosine > {format_value(cd.get('cos_threshold'))} "
              f"(k = {cd.get('k')} neighbours). Primary LID_theta: {_SCORE_NAMES.get(primary, primary)}."),
    ))
    det = pd.DataFrame(s.get("detection", []))
    if len(det) and "auroc" in det and det["auroc"].notna().any():
        det = det[det["auroc"].notna()]
        det = det.assign(score=det["score"].map(lambda c: _SCORE_NAMES.get(c, c)))
        det = _with_interval(_with_interval(det, "auroc", "auroc_ci"), "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci")
        if "ci_note" in det:
            det = det.assign(note=[" ".join(str(v) for v in (a, b) if isinstance(v, str) and v)
                                   for a, b in zip(det.get("note", [None] * len(det)), det["ci_note"])]).drop(columns=["ci_note"])
        keep = [c for c in ("positive", "score", "auroc", "tpr_at_1pct_fpr", "n_positive", "n_negative", "note") if c in det]
        body = table_to_html(det[keep], headers={"positive": "positive class", "auroc": "AUROC [95% CI]", "tpr_at_1pct_fpr": "TPR at 1% FPR [95% CI]",
                                                 "n_positive": "n positive", "n_negative": "n negative"})
    else:
        body = "<p>No detection table: every sample has the same copy label (no copies to detect).</p>"
    sections.append(Section("Detection of copies by LID", body,
                            note="Each score ranks samples with low values first (low = copy); AUROC and TPR at 1% FPR against the copy labels. "
                                 "Brackets: 95% bootstrap interval over samples (positives and negatives resampled separately, 1,000 "
                                 "resamples, seeded; lidmem.memorization.metrics.bootstrap_interval)."))
    sweep = pd.DataFrame(s.get("flipd_t0_sweep", []))
    if len(sweep) and "auroc" in sweep and sweep["auroc"].notna().any():
        sweep = _with_interval(_with_interval(sweep, "auroc", "auroc_ci"), "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci")
        keep = [c for c in ("t0", "auroc", "tpr_at_1pct_fpr", "n_positive", "median_flipd_copies", "median_flipd_others") if c in sweep]
        used = s["settings"].get("flipd_t0_used")
        sections.append(Section("FLIPD at other times t0", table_to_html(sweep[keep], headers={
            "auroc": "AUROC [95% CI]", "tpr_at_1pct_fpr": "TPR at 1% FPR [95% CI]", "n_positive": "n copies",
            "median_flipd_copies": "median FLIPD, copies", "median_flipd_others": "median FLIPD, others"}),
            note=("Copies (exact or near) against the others, low FLIPD = copy. The audit's t0: "
                  + (f"{used:.4g}" if isinstance(used, (int, float)) else "-") + ". A t0 chosen from this table uses the labels.")))
    mmh = s.get("mmh", {})
    mmh_note = (f"MMH rule: {mmh.get('rule', '')}." if mmh.get("rule") else "")
    if mmh.get("comparable") is False:
        mmh_note += (f" Not comparable: on samples with LID_* > {format_value(mmh.get('dd_threshold'), float_format='{:g}')} the median of "
                     f"LID_theta - LID_* is {float(mmh['scale_offset']):+.2f} (|.| > od_margin = {format_value(mmh.get('od_margin'), float_format='{:g}')}), "
                     f"so the classes reflect the two estimators' scales; read them as a ranking.")
    if mmh_counts:
        sections.append(Section("MMH classes", table_to_html([{"MMH class": k, "n": int(v)} for k, v in mmh_counts.items()]), note=mmh_note or None))
    if "planted_duplicates" in s:
        rows = []
        for k, v in s["planted_duplicates"].items():
            shown = f"{100.0 * v:.0f}%" if k.endswith("_frac_duplicated_train") or k.endswith("_frac_other_train") else format_value(v)
            rows.append({"check": _PLANTED_NAMES.get(k, k.replace("_", " ")), "value": shown})
        sections.append(Section("Planted duplicates", table_to_html(rows)))
    cols = ["lid_theta_flipd", "lid_theta_nb", "lid_theta_jacobian", "lid_theta_png", "lid_star"]
    sections.append(Section("LID_theta and LID_* per copy label",
                            figure_to_html(histograms_by_label(df, cols), alt="histograms of LID per copy label"),
                            note="As the paper's Figure 5 (densities per label): copies should have low LID_theta; LID_* of duplicated training images is 0."))
    order = np.argsort(df["calibrated_l2"].to_numpy())[:n_grid]
    short = primary.replace("lid_theta_", "")
    caps = [f"#{df['sample_id'].iat[i]}\ncl2 {df['calibrated_l2'].iat[i]:.2f}\n{short} {df[primary].iat[i]:.1f}" for i in order]
    grid = match_grid(result.sample_images[order], result.train_images[df["nn_train_index"].to_numpy()[order]], caps)
    if n_copies:
        title = f"The {len(order)} samples closest to a training image ({n_copies} copies in all)"
    else:
        title = f"The {len(order)} samples closest to a training image (none is a copy)"
    sections.append(Section(title, figure_to_html(grid, alt="samples closest to a training image"),
                            note=f"Top of each pair: a sample (id, calibrated l2, {_SCORE_NAMES.get(primary, primary)}), lowest calibrated l2 first; "
                                 "below it: its nearest training image."))
    if result.maps is not None and result.maps.ndim == 4:
        from ..defaults import RELATIVE_MAP_SMOOTH
        from ..estimators import relative_map, to_pixel_map
        from .maps import map_grid

        relative = len(result.maps) >= _MIN_MAP_REFERENCE
        shown = relative_map(result.maps[order], result.maps).numpy() if relative else result.maps[order]
        px = to_pixel_map(shown, result.sample_images.shape[1:], mode="bilinear").numpy()
        grid = map_grid(result.sample_images[order], px, result.train_images[df["nn_train_index"].to_numpy()[order]], caps)
        what = ("its FLIPD map relative to the audited samples (lidmem.estimators.relative_map: per-pixel robust z-score "
                f"against the median / MAD of all samples' maps, memorized values clipped, smoothed over {RELATIVE_MAP_SMOOTH:g} pixels and "
                "z-scored again; removes the model's position bias, docs/maps.md), summed over channels" if relative else
                f"its FLIPD map (per-pixel summands of eq. 6, summed over channels; fewer than {_MIN_MAP_REFERENCE} samples, "
                "so not relative to the others)")
        sections.append(Section("Where they are memorized: FLIPD maps", figure_to_html(grid, alt="memorization maps"),
                                note=f"Rows: sample, {what}; latent maps upsampled to pixels; dark = low = pinned by the model "
                                     "more than elsewhere; its nearest training image. Raw maps in maps.npy (model input shape)."))
    sections.append(Section("Settings", settings_table(jsonable(s["settings"]))))
    kind = {"score_model": "diffusion model", "generator": "generator"}.get(s["model_kind"], s["model_kind"])
    title = f"Memorization audit of a {kind} ({s['n_samples']} samples)"
    return write_html_report(path, title, sections, subtitle=_timings_text(s.get("timings_s", {})))
