import numpy as np
import pytest

from ibscope.data import (
    add_label_noise,
    icosahedron_vertices,
    load_digits_dataset,
    load_mnist_idx,
    load_twelve_bit_mat,
    mnist_8k_2k,
    read_idx,
    train_test_split,
    twelve_bit,
)


def test_twelve_bit_generator_statistics():
    x, y = twelve_bit()
    assert x.shape == (4096, 12) and x.dtype == np.uint8
    # rows are the binary expansions of 0..4095, most significant bit first
    assert np.array_equal(x @ (2 ** np.arange(11, -1, -1)), np.arange(4096))
    assert y.sum() == 2118
    p = y.mean()
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert abs(h - 0.99916) < 5e-6


def test_icosahedron_is_regular():
    v = icosahedron_vertices()
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    nearest = np.sort(d, axis=1)[:, 1:6]  # every vertex has 5 neighbours at the same distance
    assert np.allclose(nearest, nearest[0, 0])


def test_generator_reproduces_var_u_mat_bit_for_bit(shared_data):
    path = shared_data / "var_u.mat"
    if not path.is_file():
        pytest.skip("var_u.mat not in shared data")
    xm, ym = load_twelve_bit_mat(path)
    x, y = twelve_bit()
    assert xm.shape == (4096, 12) and int(ym.sum()) == 2118
    assert np.array_equal(x, xm) and np.array_equal(y, ym)


def test_mat_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="var_u.mat"):
        load_twelve_bit_mat(tmp_path / "missing.mat")
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        load_twelve_bit_mat(bad)
    import scipy.io

    wrong = tmp_path / "wrong.mat"
    scipy.io.savemat(wrong, {"F": np.zeros((10, 5)), "y": np.zeros((1, 10))})
    with pytest.raises(ValueError, match=r"\(n, 12\)"):
        load_twelve_bit_mat(wrong)


def test_split_is_shuffled_stratified_and_seeded():
    _, y = twelve_bit()
    a = train_test_split(4096, train_fraction=0.8, seed=3, stratify=y)
    b = train_test_split(4096, train_fraction=0.8, seed=3, stratify=y)
    c = train_test_split(4096, train_fraction=0.8, seed=4, stratify=y)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    assert len(np.intersect1d(a.train, a.test)) == 0 and len(a.train) + len(a.test) == 4096
    assert abs(len(a.train) / 4096 - 0.8) < 1e-3
    assert abs(y[a.train].mean() - y.mean()) < 1e-3
    # not the first rows in binary order (the reference code's bug)
    assert not np.array_equal(a.train, np.arange(len(a.train)))
    with pytest.raises(ValueError, match="train_fraction"):
        train_test_split(100, train_fraction=0.0)


def test_label_noise_flips_exact_fraction():
    y = np.repeat(np.arange(10), 100)
    noisy = add_label_noise(y, 0.3, n_classes=10, seed=0)
    assert (noisy != y).sum() == 300
    assert noisy.min() >= 0 and noisy.max() <= 9
    with pytest.raises(ValueError, match="ratio"):
        add_label_noise(y, 1.5)


def test_digits():
    x, y = load_digits_dataset()
    assert x.shape == (1797, 64) and 0 <= x.min() and x.max() <= 1 and set(np.unique(y)) == set(range(10))


def test_mnist_idx(shared_data):
    if not (shared_data / "mnist").is_dir():
        pytest.skip("MNIST files not in shared data")
    images, labels = load_mnist_idx(shared_data)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    d = mnist_8k_2k(shared_data)
    assert d["x_train"].shape == (8000, 784) and d["x_test"].shape == (2000, 784)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x00" * 5)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def _idx_bytes(images: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([images.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    return header + images.astype(np.uint8).tobytes()


def test_read_idx_names_a_truncated_or_header_only_file(tmp_path):
    import gzip

    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "ok-images-idx3-ubyte"
    good.write_bytes(_idx_bytes(images))
    assert np.array_equal(read_idx(good), images)  # the writer above is a valid IDX file
    header_only = tmp_path / "header-idx3-ubyte"
    header_only.write_bytes(_idx_bytes(images)[:16])
    with pytest.raises(ValueError, match=r"header-idx3-ubyte.*header only, no data"):
        read_idx(header_only)
    cut_header = tmp_path / "cut-idx3-ubyte"
    cut_header.write_bytes(_idx_bytes(images)[:9])  # the dimensions themselves are cut off
    with pytest.raises(ValueError, match=r"cut-idx3-ubyte.*header needs 16 bytes"):
        read_idx(cut_header)
    gz = tmp_path / "cut-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(images))[:-12])  # a download cut short
    with pytest.raises(ValueError, match=r"cut-images-idx3-ubyte\.gz.*truncated or corrupt"):
        read_idx(gz)


def test_loaders_reject_a_path_that_is_not_a_path():
    with pytest.raises(TypeError, match=r"'path'.*NoneType.*twelve_bit\(\)"):
        load_twelve_bit_mat(None)
    with pytest.raises(TypeError, match=r"'path'.*IDX file"):
        read_idx(None)
