"""The real Fashion-MNIST files (Debian's dataset-fashion-mnist, or --data-dir/CNNZOO_DATA).

CI installs the package (.ci/run), so there a missing data set fails the test; locally, without
CI=true, it is skipped.
"""

import os

import pytest
import torch

from cnnzoo.data import BatchLoader, load_dataset, train_val_split
from cnnzoo.data.sources import FASHION_MNIST_CLASSES


@pytest.fixture(scope="module")
def fashion():
    try:
        return load_dataset("fashion-mnist"), load_dataset("fashion-mnist", "test")
    except FileNotFoundError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Fashion-MNIST must be installed in CI (.ci/run installs Debian's "
                        f"dataset-fashion-mnist): {err}")
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {err}")


def test_fashion_mnist_real_files(fashion):
    train, test = fashion
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.classes == list(FASHION_MNIST_CLASSES)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    # Known statistics of the training split (mean 0.2860, std 0.3530, as commonly quoted).
    assert abs(train.mean[0] - 0.2860) < 5e-4 and abs(train.std[0] - 0.3530) < 5e-4
    assert test.mean == train.mean
    # Trousers are tall and narrow: their outer columns are darker than a T-shirt's.
    edges = train.images[:, 0, :, [2, 3, 24, 25]].float().mean((1, 2))
    assert edges[train.labels == 1].mean() < edges[train.labels == 0].mean() / 2


def test_fashion_mnist_pipeline_epoch(fashion):
    train, _ = fashion
    fit, val = train_val_split(train, 5000)
    assert val.class_counts().tolist() == [500] * 10
    loader = BatchLoader(fit, 1000, shuffle=True, drop_last=True)
    x, y = next(iter(loader))
    assert x.shape == (1000, 1, 28, 28) and abs(float(x.mean())) < 0.1
    assert abs(float(x.std()) - 1) < 0.1 and len(loader) == 55
    assert torch.bincount(y, minlength=10).min() > 50
