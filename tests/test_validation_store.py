import numpy as np
import pandas as pd
import pytest
import torch

from ibscope import _validation as V
from ibscope._units import from_nats, to_nats
from ibscope.store import TableWriter, atomic_write_bytes, atomic_write_parquet, config_hash


def test_check_array_shapes_types_and_errors():
    assert V.check_array([1.0, 2.0, 3.0], "x").shape == (3, 1)
    assert V.check_array(torch.ones(4, 2), "x").dtype == np.float64
    t = V.check_array(torch.ones(4, 2, dtype=torch.float32), "x", keep_torch=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert V.check_array(np.array([1.0, 2.0]), "y", discrete=True).dtype == np.int64
    with pytest.raises(ValueError, match="'x' contains NaN"):
        V.check_array([1.0, np.inf], "x")
    with pytest.raises(ValueError, match="'x' must have shape"):
        V.check_array(np.zeros((2, 2, 2)), "x")
    with pytest.raises(ValueError, match="at least 5"):
        V.check_array(np.zeros(3), "x", min_samples=5)
    with pytest.raises(TypeError, match="'x' must hold numbers"):
        V.check_array(np.array(["a", "b"]), "x")
    with pytest.raises(ValueError, match="declared discrete"):
        V.check_array([0.5, 1.0], "y", discrete=True)
    with pytest.raises(ValueError, match="same number of samples"):
        V.check_xy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="zero-variance column"):
        V.check_no_constant_columns(np.c_[np.arange(5), np.ones(5)], "x")


def test_validate_params_message_shape():
    cons = {"k": [V.Interval(int, 1, None)], "mode": [V.Options(("a", "b"))], "flag": [V.BOOLEAN]}
    V.validate_params("KSG", {"k": 3, "mode": "a", "flag": True}, cons)
    with pytest.raises(ValueError, match=r"The 'k' parameter of KSG must be an int in \[1, inf\)\. Got 0 instead\."):
        V.validate_params("KSG", {"k": 0}, cons)
    with pytest.raises(ValueError, match="'mode' parameter of KSG must be one of 'a', 'b'"):
        V.validate_params("KSG", {"mode": "c"}, cons)
    with pytest.raises(TypeError, match="'flag' parameter of KSG must be a bool"):
        V.validate_params("KSG", {"flag": 1}, cons)
    with pytest.raises(ValueError):
        V.validate_params("KSG", {"k": True}, cons)  # bools are not ints


def test_discrete_symbols_both_paths():
    rng = np.random.default_rng(0)
    a = rng.integers(-3, 3, size=(500, 3))
    ids, m = V.discrete_symbols(a)
    assert m == len(np.unique(a, axis=0))
    # same rows <-> same ids
    assert all((ids[i] == ids[j]) == np.array_equal(a[i], a[j]) for i, j in rng.integers(0, 500, (300, 2)))
    wide = rng.integers(0, 1000, size=(200, 12))  # 12 * log2(1000) > 62 bits: np.unique path
    wide[1] = wide[0]
    ids2, m2 = V.discrete_symbols(wide)
    assert m2 == 199 and ids2[0] == ids2[1]


def test_units():
    assert from_nats(np.log(2), "bits") == pytest.approx(1.0)
    assert to_nats(1.0, "bits") == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="'unit'"):
        from_nats(1.0, "bans")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"old")

    class Boom(bytes):
        pass

    with pytest.raises(TypeError):
        atomic_write_bytes(p, object())  # fails while writing
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.bin"]  # no temp file left behind


def test_table_writer_resumes(tmp_path):
    p = tmp_path / "t.parquet"
    w = TableWriter(p)
    w.add([{"epoch": 0, "v": 1.0}])
    w.flush()
    w2 = TableWriter(p)
    w2.add([{"epoch": 1, "v": 2.0}])
    assert w2.flush() is not None and w2.flush() is None  # nothing new the second time
    assert pd.read_parquet(p)["epoch"].tolist() == [0, 1]
    p.write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="unreadable"):
        TableWriter(p)
    atomic_write_parquet(tmp_path / "x.parquet", pd.DataFrame({"a": [1]}))


def test_config_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_drop_degenerate_columns_numpy_and_torch():
    import torch

    from ibscope._validation import drop_degenerate_columns

    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 6))
    a[:, 2] = 3.0          # a dead unit
    a[:, 4] = a[:, 1]      # two copies of column 1
    a[:, 5] = a[:, 1]
    for arr in (a, torch.tensor(a, dtype=torch.float32)):
        kept, info = drop_degenerate_columns(arr)
        assert info == {"constant": [2], "duplicate": [4, 5], "kept": [0, 1, 3]}
        assert tuple(kept.shape) == (200, 3)
        assert np.array_equal(np.asarray(kept), np.asarray(arr)[:, [0, 1, 3]])
    healthy = rng.standard_normal((50, 3))
    assert drop_degenerate_columns(healthy)[0] is healthy
    # a column equal to another up to a permutation of rows is not a duplicate
    b = np.column_stack([healthy[:, 0], healthy[::-1, 0]])
    assert drop_degenerate_columns(b)[1]["duplicate"] == []
    kept, info = drop_degenerate_columns(np.ones((5, 3)))
    assert kept.shape == (5, 1) and info["constant"] == [1, 2]
    with pytest.raises(ValueError, match="2-D"):
        drop_degenerate_columns(np.ones(5))
