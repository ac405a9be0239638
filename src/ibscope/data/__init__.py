"""Data sets: the 12-bit task (generated or from var_u.mat), digits, MNIST IDX, splits."""

from ._mnist import load_mnist_idx, mnist_8k_2k, read_idx
from ._paths import data_dir, require_file
from ._split import Split, add_label_noise, load_digits_dataset, train_test_split
from ._tokens import token_task
from ._twelve_bit import icosahedron_vertices, load_twelve_bit_mat, twelve_bit

__all__ = [
    "Split", "add_label_noise", "data_dir", "icosahedron_vertices", "load_digits_dataset",
    "load_mnist_idx", "load_twelve_bit_mat", "mnist_8k_2k", "read_idx", "require_file",
    "token_task", "train_test_split", "twelve_bit",
]
