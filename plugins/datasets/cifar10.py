"""`cifar10`: 32x32 colour images in 10 classes, read from the official "python version"
pickles (``data_batch_1`` ... ``data_batch_5``, ``test_batch``)."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
from pydantic import Field

from advbench import Dataset, DatasetArrays, hookimpl
from advbench.errors import DataError
from advbench.kit.datafiles import FileDatasetParams, Remote, ensure_files, extract, locate, move_into_place

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REMOTE = Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a")


class CIFAR10Params(FileDatasetParams):
    batches: list[int] | None = Field(
        None, description="Training batches to read (1-5); default every data_batch_N present (at least one)."
    )


class CIFAR10(Dataset):
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test, 32x32 RGB; reads the training batches present."""

    Params = CIFAR10Params
    mirror_invariant = True

    def load(self) -> DatasetArrays:
        root = locate(self.params.data_dir, "cifar10", lambda d: (d / "cifar-10-batches-py").is_dir())
        folder = root / "cifar-10-batches-py"
        if not (folder / "test_batch").is_file() and not self._unpack(root):
            ensure_files(root, [REMOTE], self.params.download, present=False)
            self._unpack(root)
        wanted = self.params.batches
        names = [f"data_batch_{i}" for i in (wanted or range(1, 6))]
        if wanted is None:
            names = [n for n in names if (folder / n).is_file()]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing or not names:
            raise DataError(f"cifar10: training batches {', '.join(missing) or 'data_batch_1..5'} not found in {folder}")
        parts = [self._read(folder / n) for n in names]
        x_test, y_test = self._read(folder / "test_batch")
        return DatasetArrays(
            x_train=np.concatenate([p[0] for p in parts]),
            y_train=np.concatenate([p[1] for p in parts]),
            x_test=x_test,
            y_test=y_test,
            num_classes=10,
            class_names=self._class_names(folder),
            info={"folder": str(folder), "train_batches": names},
        )

    @staticmethod
    def _unpack(root: Path) -> bool:
        """Extract a downloaded archive, if one is there (atomically: extract aside, then move)."""
        archive = root / REMOTE.filename
        if not archive.is_file():
            return False
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            extract(archive, Path(scratch))
            move_into_place(Path(scratch) / "cifar-10-batches-py", root / "cifar-10-batches-py")
        archive.unlink()
        return True

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with path.open("rb") as stream:
                batch = pickle.load(stream, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = np.asarray(batch["labels"], dtype=np.int64)
        except Exception as exc:
            raise DataError(f"{path}: corrupt or truncated CIFAR-10 batch ({exc.__class__.__name__}: {exc})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels) or labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{path}: expected N x 3072 pixels and N labels in 0..9, got {data.shape} and {labels.shape}")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-major rows -> NHWC
        return images.astype(np.float32) / 255.0, labels

    @staticmethod
    def _class_names(folder: Path) -> list[str]:
        try:
            with (folder / "batches.meta").open("rb") as stream:
                names = pickle.load(stream, encoding="latin1")["label_names"]
            return [str(n) for n in names] if len(names) == 10 else CLASS_NAMES
        except Exception:
            return CLASS_NAMES


@hookimpl
def advbench_register_datasets(register):
    register("cifar10", CIFAR10)
