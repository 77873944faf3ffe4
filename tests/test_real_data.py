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
