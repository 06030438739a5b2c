"""Copy detection against planted truth: copies of training digits vs held-out digits."""

import numpy as np
import pytest

from lidmem.data.images import load_digits_images
from lidmem.memorization.copy_detection import PCAEmbedder, calibration_distances, dedupe_rows, find_copies, label_copies


@pytest.fixture(scope="module")
def split():
    imgs, _ = load_digits_images()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(imgs))
    return imgs[perm[:1200]], imgs[perm[1200:]]


def test_planted_copies_found_and_heldout_not(split):
    train, held = split
    rng = np.random.default_rng(1)
    src = rng.choice(len(train), 20, replace=False)
    copies = train[src] + 0.01 * rng.standard_normal(train[src].shape).astype(np.float32)
    samples = np.concatenate([copies, held[:200]])
    m = find_copies(samples, train, k=5)
    np.testing.assert_array_equal(m.nn_index[:20], src)
    np.testing.assert_array_equal(m.embed_index[:20], src)
    assert (m.labels[:20] == "exact_copy").all()
    assert (m.calibrated_l2[:20] < 0.1).all() and (m.embed_cos[:20] > 0.99).all()
    # held-out real digits are not copies of the training set
    assert (m.labels[20:] == "none").mean() >= 0.9
    assert np.median(m.calibrated_l2[20:]) > 0.7


def test_calibration_formula_by_brute_force(split):
    train, held = split
    train, q = train[:300], held[:15]
    k = 3
    m = find_copies(q, train, k=k, search="exact")
    flat_t, flat_q = train.reshape(300, -1).astype(np.float64), q.reshape(15, -1).astype(np.float64)
    for i in range(15):
        d = np.linalg.norm(flat_t - flat_q[i], axis=1)
        j = int(np.argmin(d))
        dj = np.sort(np.linalg.norm(flat_t - flat_t[j], axis=1))[1 : k + 1]  # itself excluded
        assert m.nn_index[i] == j
        np.testing.assert_allclose(m.calibrated_l2[i], d[j] / dj.mean(), rtol=1e-5)
    assert m.settings["k"] == 3


def test_duplicates_in_training_set_still_calibrate(split):
    train, held = split
    base = train[:300]
    dup = np.concatenate([base, np.repeat(base[:10], 20, axis=0)])  # 10 images, 21 copies each
    q = np.concatenate([base[:10], held[:20]])
    m_dup = find_copies(q, dup, k=4)
    m_ref = find_copies(q, base, k=4)
    assert np.isfinite(m_dup.calibrated_l2).all()
    np.testing.assert_allclose(m_dup.calibrated_l2, m_ref.calibrated_l2, rtol=1e-6)
    assert (m_dup.nn_index[:10] == np.arange(10)).all()  # first row among duplicates
    assert m_dup.settings["n_train_distinct"] == 300 and m_dup.settings["n_train_duplicated_rows"] == 210
    first, inverse, counts = dedupe_rows(dup.reshape(len(dup), -1))
    assert len(first) == 300 and counts.max() == 21
    np.testing.assert_array_equal(first[inverse], np.concatenate([np.arange(300), np.repeat(np.arange(10), 20)]))


def test_faiss_search_agrees_with_exact(split):
    pytest.importorskip("faiss")
    train, held = split
    exact = find_copies(held[:100], train, search="exact")
    ann = find_copies(held[:100], train, search="faiss")
    assert ann.settings["search"] == "faiss"
    assert (ann.nn_index == exact.nn_index).mean() >= 0.95
    np.testing.assert_allclose(np.median(ann.calibrated_l2), np.median(exact.calibrated_l2), rtol=0.05)


class FlatEmbedder:
    def fit(self, images):
        return self

    def transform(self, images):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


def test_custom_embedder_gives_max_cosine(split):
    train, held = split
    m = find_copies(held[:10], train[:200], embedder=FlatEmbedder())
    t = train[:200].reshape(200, -1).astype(np.float64)
    q = held[:10].reshape(10, -1).astype(np.float64)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    np.testing.assert_allclose(m.embed_cos, cos.max(1), rtol=1e-5)
    np.testing.assert_array_equal(m.embed_index, cos.argmax(1))
    assert "PCAEmbedder" in find_copies(held[:3], train[:50]).settings["embedder"]
    assert PCAEmbedder(8).fit(train[:50]).transform(held[:3]).shape == (3, 8)


def test_labels_from_thresholds():
    lab = label_copies(np.array([0.05, 0.4, 0.9, 0.9]), np.array([0.0, 0.0, 0.99, 0.5]))
    assert lab.tolist() == ["exact_copy", "near_copy", "near_copy", "none"]
    with pytest.raises(ValueError, match="exact_threshold"):
        label_copies(np.zeros(1), np.zeros(1), exact_threshold=0.6, near_threshold=0.5)


def test_bad_inputs(split):
    train, held = split
    with pytest.raises(ValueError, match="share one shape"):
        find_copies(np.zeros((2, 1, 4, 4)), train)
    with pytest.raises(ValueError, match="distinct training images"):
        calibration_distances(train[:5].reshape(5, -1), np.array([0]), k=5)
    with pytest.raises(ValueError, match="search"):
        find_copies(held[:2], train, search="annoy")
