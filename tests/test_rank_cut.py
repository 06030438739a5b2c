"""The rank-cut helper shared by the normal bundle, the Jacobian rank and local PCA."""

import pytest
import torch

from lidmem.estimators._rank import count_above, cut_rank, gap_rank, numerical_rank_floor, percentile_threshold


def test_gap_rank_linear_with_reference_and_log_without():
    sv = torch.tensor([[5.0, 4.9, 0.1], [0.2, 0.1, 0.05], [3.0, 2.9, 2.8]], dtype=torch.float64)
    assert gap_rank(sv, 5.0).tolist() == [2, 0, 3]  # the normal bundle's rule
    sv = torch.tensor([[1.0, 0.3, 0.1, 1e-9], [1.0, 1e-1, 1e-2, 1e-3], [2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    floor = numerical_rank_floor(sv, (16, 4), torch.float32)
    assert gap_rank(sv, log=True, floor=floor).tolist() == [3, 4, 2, 0]


def test_cut_rank_rules():
    sv = torch.tensor([[1.0, 0.5, 1e-5], [0.8, 0.4, 0.2]], dtype=torch.float64)
    assert cut_rank(sv, 0.3, shape=(3, 3)).tolist() == [2, 2]
    tau = percentile_threshold(sv, 50.0)
    assert tau == pytest.approx(0.45)
    assert cut_rank(sv, "percentile", shape=(3, 3), percentile=50.0).tolist() == count_above(sv, tau).tolist() == [2, 1]
    assert cut_rank(sv, "gap", shape=(3, 3), log_gap=True).tolist() == [2, 3]
    # numerical zeros never count, whatever tau
    assert cut_rank(torch.tensor([[1.0, 1e-9]], dtype=torch.float64), 0.0, shape=(3, 3)).tolist() == [1]
    with pytest.raises(ValueError, match="threshold"):
        cut_rank(sv, "largest", shape=(3, 3))
    with pytest.raises(ValueError, match="threshold"):
        cut_rank(sv, float("nan"), shape=(3, 3))
