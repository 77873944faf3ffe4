"""The shipped CIFAR-LT recipes on the real data in ../shared/data (slow: --runslow)."""

from pathlib import Path

import pytest

from longtail.config import load_config
from longtail.data import read_splits

ROOT = Path(__file__).parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.slow
def test_cifar100_lt_recipe_reads_the_benchmark_counts():
    if not (SHARED / "cifar-100-python").exists():
        pytest.skip("../shared/data/cifar-100-python is absent")
    config = load_config([ROOT / "configs/cifar100_lt/bcl.yaml"], [f"data.root={SHARED / 'cifar-100-python'}"])
    data = config.data
    splits = read_splits(data.format, data.root, data.imbalance_factor, data.profile, data.seed)
    counts = splits.train.counts()
    assert len(splits.train) == 10847 and counts[0] == 500 and counts[-1] == 5
    assert len(splits.test) == 10000
    assert splits.train.images.shape[1:] == (32, 32, 3)


@pytest.mark.slow
def test_cifar10_folders_read_whole_then_long_tailed(tmp_path):
    """The JPEG folders: 50,000 training and 10,000 test images, then CIFAR-10-LT at 100
    (Cao et al.'s published counts), through the decoded cache and back from it."""
    from longtail.data import read_folder

    if not (SHARED / "cifar10").exists():
        pytest.skip("../shared/data/cifar10 is absent")
    whole = read_folder(SHARED / "cifar10", cache_dir=tmp_path)
    assert len(whole.train) == 50000 and len(whole.test) == 10000
    assert whole.train.counts() == [5000] * 10 and whole.test.counts() == [1000] * 10
    assert whole.train.images.shape[1:] == (32, 32, 3)
    splits = read_splits("folder", SHARED / "cifar10", 100, cache_dir=tmp_path)
    assert splits.train.counts() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(splits.test) == 10000
