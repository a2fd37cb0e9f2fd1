"""Readers: IDX, CIFAR binary and pickle (restricted), ImageFolder with its cache, look-up."""

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import folder as folder_mod
from cnnzoo.data import load_dataset
from cnnzoo.data.cifar import RestrictedUnpickler, restricted_loads
from cnnzoo.data.idx import read_idx


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own user cache and no CNNZOO_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CNNZOO_DATA", raising=False)


# ---- IDX -----------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x800 + array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_mnist(folder, n_train=12, n_test=5, gz=True, size=(6, 6)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, nd, arr in (("images", 3, images), ("labels", 1, labels)):
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_from_data_dir(tmp_path, gz):
    write_mnist(tmp_path / "mnist", gz=gz)
    train = load_dataset("mnist", data_dir=tmp_path)
    test = load_dataset("mnist", "test", data_dir=tmp_path)
    assert train.images.shape == (12, 1, 6, 6) and test.images.shape == (5, 1, 6, 6)
    assert train.labels.tolist() == [i % 10 for i in range(12)]
    assert train.classes == [str(i) for i in range(10)]
    assert test.mean == train.mean and test.std == train.std  # training statistics
    raw = read_idx(next((tmp_path / "mnist").glob("train-images*")))
    assert np.array_equal(train.images[:, 0].numpy(), raw)


@pytest.mark.parametrize(
    "content, message",
    [
        (idx_bytes(np.zeros((2, 3, 3), np.uint8), magic=0x00000801), "magic number 0x00000801"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8), magic=0x00000d03), "element type 0x0d"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], "need 34 bytes, the file has 33"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"x", "the file has 35"),
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x03" + bytes(12), "bad IDX magic"),
    ],
    ids=["labels-magic", "float-type", "short", "long", "no-header", "bad-magic"],
)
def test_idx_header_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path, 0x00000803)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_idx_truncated_gzip_and_label_count_mismatch(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 4, 4), np.uint8)))[:-20])
    with pytest.raises(ValueError, match="x.gz"):
        read_idx(path)
    folder = write_mnist(tmp_path / "m", gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(ValueError, match="11 labels for 12 images"):
        load_dataset("mnist", data_dir=folder)


def test_lookup_order_and_missing_message(tmp_path, monkeypatch):
    write_mnist(tmp_path / "first" / "mnist", n_train=12)
    write_mnist(tmp_path / "env", n_train=20)  # files directly in the root also count
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", data_dir=tmp_path / "first")) == 12
    assert len(load_dataset("mnist", data_dir=tmp_path / "empty")) == 20  # falls through
    assert len(load_dataset("mnist")) == 20
    monkeypatch.delenv("CNNZOO_DATA")
    write_mnist(tmp_path / "xdg" / "cnnzoo" / "mnist", n_train=30)  # the user cache
    assert len(load_dataset("mnist")) == 30
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "cnnzoo data cifar10" in msg and "xdg" in msg
    with pytest.raises(FileNotFoundError, match="not one of"):
        load_dataset(str(tmp_path / "no-such-thing"))


# ---- CIFAR ---------------------------------------------------------------------------------

def cifar_records(n, label_bytes, num_classes, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    head = [np.full(n, 7, np.uint8)] * (label_bytes - 1) + [labels.astype(np.uint8)]
    return np.concatenate([np.stack(head, 1), pixels], 1).tobytes(), labels, pixels


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_cifar10_binary_tarball_and_folder(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    expected = []
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "cifar-10-batches-bin/readme.html", b"<html/>")
        add_bytes(tar, "cifar-10-batches-bin/batches.meta.txt",
                  b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")
        for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)]
                                 + ["test_batch.bin"]):
            raw, labels, pixels = cifar_records(4, 1, 10, i)
            add_bytes(tar, f"cifar-10-batches-bin/{name}", raw)
            expected.append((labels, pixels))
    train = load_dataset(str(path))
    test = load_dataset(str(path), "test")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    assert np.array_equal(train.images[4:8].reshape(4, -1).numpy(), expected[1][1])
    assert train.labels[:4].tolist() == expected[0][0].tolist()
    assert test.mean == train.mean
    # The same files extracted, found by name under --data-dir.
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "root")
    by_name = load_dataset("cifar10", "test", data_dir=tmp_path / "root")
    assert torch.equal(by_name.images, test.images) and by_name.name == "cifar10"


def test_cifar100_binary_uses_fine_labels(tmp_path):
    path = tmp_path / "cifar-100-binary.tar.gz"
    names = "".join(f"c{i}\n" for i in range(100)).encode()
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "cifar-100-binary/fine_label_names.txt", names)
        raw, labels, _ = cifar_records(150, 2, 100, 0)
        add_bytes(tar, "cifar-100-binary/train.bin", raw)
        add_bytes(tar, "cifar-100-binary/test.bin", cifar_records(3, 2, 100, 1)[0])
    ds = load_dataset(str(path))
    assert len(ds.classes) == 100 and ds.classes[99] == "c99"
    assert ds.labels.tolist() == labels.tolist()  # the second (fine) byte, not the coarse 7


def test_cifar_binary_wrong_length_is_an_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for k in range(1, 6):
        (folder / f"data_batch_{k}.bin").write_bytes(cifar_records(2, 1, 10, k)[0])
    (folder / "data_batch_3.bin").write_bytes(cifar_records(2, 1, 10, 3)[0][:-5])
    with pytest.raises(ValueError, match="data_batch_3.bin: 6141 bytes is not a whole number"):
        load_dataset(str(tmp_path))


def test_cifar_python_pickles_through_the_restricted_unpickler(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = []
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = [1, 2, 3]
        batches.append(data)
        obj = {b"batch_label": b"x", b"labels": labels, b"data": data,
               b"filenames": [b"a.png", b"b.png", b"c.png"]}
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    meta = {b"label_names": [f"n{i}".encode() for i in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    ds = load_dataset(str(tmp_path))
    assert ds.images.shape == (15, 3, 32, 32) and ds.classes[3] == "n3"
    assert np.array_equal(ds.images[:3].reshape(3, -1).numpy(), batches[0])
    test = load_dataset(str(tmp_path), "test")
    assert test.labels.tolist() == [1, 2, 3]


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle (posix|nt)\.system"):
        restricted_loads(payload, "evil")
    assert not (tmp_path / "pwned-by-pickle").exists()
    for target in (eval, getattr, __import__):
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            RestrictedUnpickler(io.BytesIO(pickle.dumps(target))).load()
    # The same file dropped into a CIFAR folder stops the load with the file's name.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for k in range(1, 6):
        (folder / f"data_batch_{k}").write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="data_batch_1: refusing"):
        load_dataset(str(tmp_path))
    assert not (tmp_path / "pwned-by-pickle").exists()


# ---- ImageFolder ---------------------------------------------------------------------------

def write_folder(root, classes=("cat", "dog"), per_class=3, size=(6, 5), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / cls / f"{i}.png")
    return root


def test_image_folder_decodes_and_caches_next_to_the_data(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    ds = load_dataset(str(root))
    assert ds.images.shape == (6, 3, 5, 6) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    png = np.asarray(Image.open(root / "dog" / "1.png"))
    assert np.array_equal(ds.images[4].permute(1, 2, 0).numpy(), png)
    caches = list(root.glob(".cnnzoo-cache-*.pt"))
    assert len(caches) == 1
    # Second load: from the cache, no decoding.
    monkeypatch.setattr(folder_mod, "decode_images", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_dataset(str(root)).images, ds.images)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # A new file changes the key: rebuilt, and the stale cache is removed.
    write_folder(root, classes=("emu",), per_class=2)
    ds2 = load_dataset(str(root))
    assert ds2.classes == ["cat", "dog", "emu"] and len(ds2) == 8
    assert len(list(root.glob(".cnnzoo-cache-*.pt"))) == 1 and not caches[0].exists()


def test_image_folder_read_only_root_caches_in_user_cache(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "ro")
    monkeypatch.setattr(folder_mod, "_writable", lambda folder: False)
    ds = load_dataset(str(root))
    assert not list(root.glob(".cnnzoo-cache-*"))
    assert len(list((tmp_path / "xdg" / "cnnzoo" / "folders").glob("*.pt"))) == 1
    assert len(ds) == 6


def test_image_folder_grayscale_mixed_and_sizes(tmp_path):
    gray = write_folder(tmp_path / "gray", mode="L")
    assert load_dataset(str(gray)).images.shape == (6, 1, 5, 6)
    mixed = write_folder(tmp_path / "mixed", classes=("a",), mode="L")
    write_folder(mixed, classes=("b",), mode="RGB")
    ds = load_dataset(str(mixed))
    assert ds.images.shape == (6, 3, 5, 6)
    assert torch.equal(ds.images[0, 0], ds.images[0, 2])  # gray repeated over RGB
    odd = write_folder(tmp_path / "odd", classes=("a",))
    write_folder(odd, classes=("b",), size=(7, 7))
    with pytest.raises(ValueError, match=r"differ in size \(6x5 for .*0.png, 7x7 for"):
        load_dataset(str(odd))
    assert load_dataset(str(odd), image_size=8).images.shape == (6, 3, 8, 8)


def test_image_folder_tarball_with_splits(tmp_path):
    src = tmp_path / "src"
    write_folder(src / "train", per_class=4, seed=1)
    write_folder(src / "test", per_class=2, seed=2)
    path = tmp_path / "imgs.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname="data")
    train = load_dataset(str(path))
    test = load_dataset(str(path), "test")
    assert len(train) == 8 and len(test) == 4 and test.classes == ["cat", "dog"]
    assert test.mean == train.mean
    ref = load_dataset(str(src), "test")
    assert torch.equal(ref.images, test.images) and ref.mean == train.mean
    only_train = tmp_path / "t.tar"
    with tarfile.open(only_train, "w") as tar:
        tar.add(src / "train", arcname="train")
    with pytest.raises(FileNotFoundError, match="no 'test' images"):
        load_dataset(str(only_train), "test")


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no PNG/JPEG"):
        load_dataset(str(tmp_path / "empty"))
    bad = write_folder(tmp_path / "bad", classes=("a",))
    (bad / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: cannot decode"):
        load_dataset(str(bad))
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
        load_dataset(str(write_folder(tmp_path / "plain")), "test")
