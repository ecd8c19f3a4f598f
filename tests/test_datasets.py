"""Datasets and subsets: dataset loaders on small files written in each official format,
downloads from a local server, corrupt files, the real files in ../shared/data when present,
and stratified subsets."""

import functools
import gzip
import hashlib
import http.server
import pickle
import threading

import numpy as np
import pytest
from conftest import SHARED_DATA
from typer.testing import CliRunner

from advbench import load_dataset
from advbench.core.data import make_subsets, stratified_indices
from advbench.errors import DataError
from advbench.kit.datafiles import Remote, fetch


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder, compress=True, n=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n // 2, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n // 2) % 10,
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist")])
def test_idx_files_gzip_or_plain(tmp_path, compress, name, folder):
    arrays = write_idx_dataset(tmp_path / folder, compress)
    data = load_dataset(name, data_dir=str(tmp_path), download=False)
    assert data.x_train.shape == (6, 28, 28, 1) and data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train[..., 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    assert data.y_test.tolist() == [0, 1, 2]
    # data_dir may also name the dataset folder itself
    assert load_dataset(name, data_dir=str(tmp_path / folder), download=False).x_test.shape == (3, 28, 28, 1)


def test_keras_mnist_npz(tmp_path):
    (tmp_path / "mnist").mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "mnist" / "mnist.npz",
        x_train=rng.integers(0, 256, (4, 28, 28)).astype(np.uint8),
        y_train=np.arange(4),
        x_test=rng.integers(0, 256, (2, 28, 28)).astype(np.uint8),
        y_test=np.arange(2),
    )
    data = load_dataset("mnist", data_dir=str(tmp_path), download=False)
    assert data.x_train.shape == (4, 28, 28, 1) and data.info["files"] == ["mnist.npz"]


def test_truncated_gzip_and_inconsistent_idx_are_detected(tmp_path):
    write_idx_dataset(tmp_path / "mnist")
    image_file = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    image_file.write_bytes(image_file.read_bytes()[:-30])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset("mnist", data_dir=str(tmp_path), download=False)
    image_file.write_bytes(gzip.compress(idx_bytes(np.zeros((6, 28, 28)))[:-5]))
    with pytest.raises(DataError, match="header announces"):
        load_dataset("mnist", data_dir=str(tmp_path), download=False)


def test_missing_files_name_the_files_and_the_folder(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("mnist", data_dir=str(tmp_path), download=False)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "mnist") in message and "ADVBENCH_DATA" in message


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_download_is_checksum_verified_and_atomic(tmp_path, server):
    served, url = server
    (served / "file.bin").write_bytes(b"payload" * 1000)
    good = hashlib.md5(b"payload" * 1000).hexdigest()
    target = tmp_path / "data"
    assert fetch(Remote(f"{url}/file.bin", md5=good), target, show_progress=False).read_bytes() == b"payload" * 1000
    (target / "file.bin").unlink()
    with pytest.raises(DataError, match="failed its md5 check"):
        fetch(Remote(f"{url}/file.bin", md5="0" * 32), target, show_progress=False)
    assert list(target.iterdir()) == []  # nothing half-written stays behind
    with pytest.raises(DataError, match="could not download"):
        fetch(Remote(f"{url}/absent.bin"), target, show_progress=False)


def test_mnist_downloads_missing_files(tmp_path, server, monkeypatch):
    from advbench_plugins.datasets.mnist import MNIST

    served, url = server
    write_idx_dataset(served)
    remotes = [Remote(f"{url}/{p.name}", md5=hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(served.glob("*.gz"))]
    monkeypatch.setattr(MNIST, "remotes", remotes)
    data = load_dataset("mnist", data_dir=str(tmp_path / "store"))
    assert data.x_train.shape == (6, 28, 28, 1)
    assert sorted(p.name for p in (tmp_path / "store" / "mnist").iterdir()) == sorted(p.name for p in served.glob("*.gz"))


def test_offline_run_fails_clearly(tmp_path, monkeypatch):
    from advbench_plugins.datasets.mnist import MNIST

    monkeypatch.setattr(MNIST, "remotes", [Remote("http://127.0.0.1:9/train-images-idx3-ubyte.gz")])
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: offline
dataset: {{name: mnist, data_dir: {tmp_path / "nothing"}}}
models: [{{name: m, architecture: {{name: linear}}}}]
threat_models: [{{norm: linf, eps: [0.1]}}]
certifiers: [{{name: lipschitz}}]
""")
    from advbench.cli import app

    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "files not found" in result.output and "download failed" in result.output and "Traceback" not in result.output
    assert result.output.count("dataset 'mnist'") == 1, result.output  # named once, not once per layer that passes it on


def write_cifar(folder, batches=(1, 2), n=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{b}" for b in batches] + ["test_batch"]:
        # as rebuilt in ../shared/data: no `filenames` key
        batch = {"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    return batch


def test_cifar10_pickles_channel_major_to_nhwc_and_batch_choice(tmp_path):
    last = write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    data = load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert data.x_train.shape == (8, 32, 32, 3) and data.info["train_batches"] == ["data_batch_1", "data_batch_2"]
    red_plane = last["data"][0, :1024].reshape(32, 32)
    np.testing.assert_allclose(data.x_test[0, :, :, 0] * 255, red_plane, atol=1e-4)
    assert load_dataset("cifar10", data_dir=str(tmp_path), batches=[2], download=False).x_train.shape[0] == 4
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=str(tmp_path), batches=[3], download=False)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)


def sign_image(path, size=(40, 36), roi=(5, 6, 30, 28), fmt="PNG"):
    """Blue image with a red rectangle exactly on the ROI."""
    from PIL import Image

    pixels = np.zeros(size[::-1] + (3,), np.uint8)
    pixels[..., 2] = 255
    x1, y1, x2, y2 = roi
    pixels[y1 : y2 + 1, x1 : x2 + 1] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


@pytest.mark.parametrize("layout", ["png", "official"])
def test_gtsrb_layouts_crop_to_the_roi(tmp_path, layout, monkeypatch):
    monkeypatch.setenv("ADVBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "gtsrb"
    roi = (5, 6, 30, 28)
    if layout == "png":
        rows = ["Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path"]
        for i, cls in enumerate([0, 42]):
            sign_image(root / f"Train/{cls}/{i}.png", roi=roi)
            rows.append(f"40,36,{','.join(map(str, roi))},{cls},Train/{cls}/{i}.png")
        (root / "Train.csv").write_text("\n".join(rows) + "\n")
        sign_image(root / "Test/0.png", roi=roi)
        (root / "Test.csv").write_text(rows[0] + f"\n40,36,{','.join(map(str, roi))},7,Test/0.png\n")
    else:
        base = root / "GTSRB"
        for cls in (0, 42):
            folder = base / "Final_Training/Images" / f"{cls:05d}"
            sign_image(folder / "00000_00000.ppm", roi=roi, fmt="PPM")
            (folder / f"GT-{cls:05d}.csv").write_text(
                "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                f"00000_00000.ppm;40;36;{';'.join(map(str, roi))};{cls}\n"
            )
        sign_image(base / "Final_Test/Images/00000.ppm", roi=roi, fmt="PPM")
        (root / "GT-final_test.csv").write_text(
            f"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n00000.ppm;40;36;{';'.join(map(str, roi))};7\n"
        )
    data = load_dataset("gtsrb", data_dir=str(tmp_path), image_size=16, download=False)
    assert data.x_train.shape == (2, 16, 16, 3) and data.num_classes == 43 and len(data.class_names) == 43
    assert sorted(data.y_train.tolist()) == [0, 42] and data.y_test.tolist() == [7]
    np.testing.assert_allclose(data.x_train[..., 0], 1.0)  # all red: cropped exactly to the ROI
    np.testing.assert_allclose(data.x_train[..., 2], 0.0)
    assert data.info["layout"] == layout


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")


@needs_shared
@pytest.mark.parametrize(
    "name, params, train, test, shape",
    [
        ("mnist", {}, 60000, 10000, (28, 28, 1)),
        ("cifar10", {}, 10000, 10000, (32, 32, 3)),
        ("gtsrb", {}, 13070, 6315, (32, 32, 3)),
        ("gtsrb", {"data_dir": str(SHARED_DATA / "gtsrb-official-sample")}, 30, 30, (32, 32, 3)),
    ],
)
def test_real_files(name, params, train, test, shape, monkeypatch):
    monkeypatch.setenv("ADVBENCH_DATA", str(SHARED_DATA))
    data = load_dataset(name, download=False, **params)
    assert len(data.x_train) == train and len(data.x_test) == test and data.input_shape == shape
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1


def test_digits_is_float_nhwc_in_unit_range():
    data = load_dataset("digits")
    assert data.x_train.shape == (1347, 8, 8, 1) and data.x_test.shape == (450, 8, 8, 1)
    assert data.x_train.dtype == np.float32 and data.x_train.min() == 0 and data.x_train.max() == 1
    assert data.num_classes == 10 and len(data.class_names) == 10


def test_stratified_subsets_are_deterministic_and_keep_class_shares():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    first = stratified_indices(labels, 40, seed=3)
    assert np.array_equal(first, stratified_indices(labels, 40, seed=3))
    assert not np.array_equal(first, stratified_indices(labels, 40, seed=4))
    assert len(first) == 40 and len(set(first)) == 40
    assert np.bincount(labels[first]).tolist() == [20, 10, 6, 4]
    assert np.array_equal(stratified_indices(labels, None, 0), np.arange(200))


def test_evaluated_examples_are_a_subset_of_the_test_subset():
    data = load_dataset("digits")
    subsets = make_subsets(data, 300, 100, 30, seed=0)
    assert set(subsets.eval_index) <= set(subsets.test_index)
    assert len(subsets.x_train) == 300 and len(subsets.x_test) == 100 and len(subsets.x_eval) == 30
