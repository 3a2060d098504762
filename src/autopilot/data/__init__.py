"""Data: loading, validation with clear errors, seeded splits, profiling, augmentation.

Augmentation (data.augment.make_augment) is not imported here: it needs torch
and kornia, and loading data should not.
"""
from .builtin import BUILTINS, load_builtin
from .dataset import DataError, Dataset
from .files import load_path
from .inputs import read_inputs
from .load import load
from .profile import profile
from .split import TEST_SPLITS, load_splits, official_test, save_splits, split
from .validate import validate

__all__ = [
    "BUILTINS",
    "DataError",
    "Dataset",
    "load",
    "load_builtin",
    "load_path",
    "load_splits",
    "official_test",
    "profile",
    "read_inputs",
    "save_splits",
    "split",
    "TEST_SPLITS",
    "validate",
]
