"""Data: manifolds with known LID, analytic score oracles, and readers for data sets on disk."""

from .io import load_image_folder, load_points
from .manifolds import MANIFOLDS, ManifoldSample, sample_manifold, von_mises_mixture

__all__ = ["load_points", "load_image_folder", "MANIFOLDS", "ManifoldSample", "sample_manifold", "von_mises_mixture"]
