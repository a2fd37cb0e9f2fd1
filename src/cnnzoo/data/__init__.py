"""Data: readers (IDX, CIFAR binary, ImageFolder, synthetic), the uint8-tensor batch pipeline,
tensor augmentation and checksummed downloads. Uses torch, numpy and Pillow; never models or
train."""

from cnnzoo.data.augment import Augment, augment_batch, normalize, preprocess, resize
from cnnzoo.data.dataset import ImageDataset, channel_stats, make_synthetic, train_val_split
from cnnzoo.data.loader import BatchLoader
from cnnzoo.data.sources import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "Augment",
    "BatchLoader",
    "ImageDataset",
    "augment_batch",
    "channel_stats",
    "load_dataset",
    "make_synthetic",
    "normalize",
    "preprocess",
    "resize",
    "train_val_split",
]
