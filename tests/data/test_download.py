"""Downloads against a local HTTP server: a good file, a wrong checksum, a truncated transfer."""

import gzip
import hashlib
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from cnnzoo.cli import main
from cnnzoo.data import load_dataset, sources
from cnnzoo.data.download import DownloadError, download, fetch

PAYLOAD = bytes(range(256)) * 300
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def idx_gz(array):
    return gzip.compress(struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape)
                         + array.tobytes())


MNIST_FILES = {
    "train-images-idx3-ubyte.gz": idx_gz(np.full((4, 5, 5), 9, np.uint8)),
    "train-labels-idx1-ubyte.gz": idx_gz(np.array([0, 1, 2, 3], np.uint8)),
    "t10k-images-idx3-ubyte.gz": idx_gz(np.full((2, 5, 5), 3, np.uint8)),
    "t10k-labels-idx1-ubyte.gz": idx_gz(np.array([4, 5], np.uint8)),
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        kind, _, name = self.path.lstrip("/").partition("/")
        body = MNIST_FILES.get(name.rpartition("/")[2], PAYLOAD)
        if kind == "missing":
            self.send_error(404)
            return
        if kind == "bad":
            body = body[:-1] + bytes([body[-1] ^ 1])  # one flipped bit: same size, other MD5
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (5000 if kind == "trunc" else 0)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True  # the "truncated" reply ends here, short of its length


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_good_file_is_saved_with_its_checksum(server, tmp_path):
    target = fetch(f"{server}/good/blob.bin", tmp_path / "blob.bin", PAYLOAD_MD5, timeout=10)
    assert target.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["blob.bin"]


@pytest.mark.parametrize("kind, message", [
    ("bad", "checksum mismatch"),
    ("trunc", f"truncated transfer.* of {len(PAYLOAD) + 5000} bytes"),
    ("missing", "404"),
])
def test_failed_transfer_leaves_nothing(server, tmp_path, kind, message):
    with pytest.raises(DownloadError, match=message) as err:
        fetch(f"{server}/{kind}/blob.bin", tmp_path / "blob.bin", PAYLOAD_MD5, timeout=10)
    assert "nothing was saved" in str(err.value) or "deleted" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no target, no temp file


@pytest.fixture
def fake_mnist(monkeypatch):
    """MNIST's entry with the MD5s of the small files the server holds."""
    info = sources.DatasetInfo(
        "mnist", "idx", "unused",
        {name: hashlib.md5(data).hexdigest() for name, data in MNIST_FILES.items()},
        tuple(str(i) for i in range(10)),
    )
    monkeypatch.setitem(sources.DATASETS, "mnist", info)
    monkeypatch.delenv("CNNZOO_DATA", raising=False)


def test_download_then_load_by_name(server, tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setenv("CNNZOO_MIRROR", f"{server}/good")
    folder = download("mnist", tmp_path)
    assert folder == tmp_path / "mnist" and len(list(folder.iterdir())) == 4
    ds = load_dataset("mnist", "test", data_dir=tmp_path)
    assert ds.labels.tolist() == [4, 5] and ds.images.shape == (2, 1, 5, 5)
    lines = []
    download("mnist", tmp_path, report=lines.append)  # second time: verified, not fetched
    assert all("present, MD5 ok" in line for line in lines) and len(lines) == 4


def test_cli_download_failure_is_one_line(server, tmp_path, fake_mnist, capsys):
    rc = main(["data", "mnist", "--data-dir", str(tmp_path), "--base-url", f"{server}/bad/"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "checksum mismatch" in err
    assert err.startswith("cnnzoo data: error:")
    assert list((tmp_path / "mnist").iterdir()) == []
    rc = main(["data", "mnist", "--data-dir", str(tmp_path), "--base-url", f"{server}/good/"])
    assert rc == 0 and "ready in" in capsys.readouterr().out
