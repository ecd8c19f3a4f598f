"""`mnist` and `fashion_mnist`: 28x28 grey images, read from the official IDX files
(gzipped or plain) or, for MNIST, from Keras's ``mnist.npz``."""

from __future__ import annotations

import numpy as np

from advbench import Dataset, DatasetArrays, hookimpl
from advbench.errors import DataError
from advbench.kit.datafiles import FileDatasetParams, Remote, ensure_files, locate, parse_idx, read_bytes

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class IDXDataset(Dataset):
    """Base of the IDX datasets; subclasses name the folder, sources and classes."""

    Params = FileDatasetParams
    folder = ""
    remotes: list[Remote] = []
    class_names: list[str] = []

    def load(self) -> DatasetArrays:
        folder = locate(
            self.params.data_dir, self.folder, lambda d: bool(self._find(d, IDX_FILES[0]) or (d / "mnist.npz").is_file())
        )
        alternative = self.read_alternative(folder)
        if alternative is not None:
            return alternative
        ensure_files(folder, self.remotes, self.params.download, all(self._find(folder, n) for n in IDX_FILES))
        x_train, y_train, x_test, y_test = (
            parse_idx(read_bytes(self._find(folder, n)), self._find(folder, n)) for n in IDX_FILES
        )
        files = [self._find(folder, n).name for n in IDX_FILES]
        return self._arrays(x_train, y_train, x_test, y_test, {"folder": str(folder), "files": files})

    def read_alternative(self, folder):
        return None

    @staticmethod
    def _find(folder, name):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
        return None

    def _arrays(self, x_train, y_train, x_test, y_test, info) -> DatasetArrays:
        for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise DataError(
                    f"{self.folder} {split}: expected N x 28 x 28 images with N labels, got {images.shape} and {labels.shape}"
                )
            if labels.min() < 0 or labels.max() >= len(self.class_names):
                raise DataError(f"{self.folder} {split}: labels outside 0..{len(self.class_names) - 1}")
        return DatasetArrays(
            x_train=(x_train.astype(np.float32) / 255.0)[..., None],
            y_train=y_train.astype(np.int64),
            x_test=(x_test.astype(np.float32) / 255.0)[..., None],
            y_test=y_test.astype(np.int64),
            num_classes=len(self.class_names),
            class_names=list(self.class_names),
            info=info,
        )


class MNIST(IDXDataset):
    """MNIST handwritten digits (LeCun et al.): 60,000 train / 10,000 test, 28x28."""

    folder = "mnist"
    remotes = [
        Remote(
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"
        ),
        Remote(
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"
        ),
        Remote("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
        Remote("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"),
    ]
    class_names = [str(d) for d in range(10)]

    def read_alternative(self, folder):
        """Keras's ``mnist.npz`` (x_train, y_train, x_test, y_test), used when the IDX files are absent."""
        npz = folder / "mnist.npz"
        if not npz.is_file() or all(self._find(folder, n) for n in IDX_FILES):
            return None
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except Exception as exc:
            raise DataError(f"{npz}: corrupt or not Keras's mnist.npz ({exc.__class__.__name__}: {exc})") from None
        return self._arrays(*arrays, {"folder": str(folder), "files": ["mnist.npz"]})


class FashionMNIST(IDXDataset):
    """Fashion-MNIST (Xiao et al. 2017): 10 clothing classes, 60,000 train / 10,000 test, 28x28."""

    folder = "fashion_mnist"
    remotes = [
        Remote(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
            md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        Remote(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
            md5="25c81989df183df01b3e8a0aad5dffbe",
        ),
        Remote(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
            md5="bef4ecab320f06d8554ea6380940ec79",
        ),
        Remote(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
            md5="bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ]
    class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@hookimpl
def advbench_register_datasets(register):
    register("mnist", MNIST)
    register("fashion_mnist", FashionMNIST)
