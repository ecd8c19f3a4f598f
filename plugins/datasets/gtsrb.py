"""`gtsrb`: the German Traffic Sign Recognition Benchmark (Stallkamp et al. 2011), 43
classes, cropped to each image's region of interest and resized (32x32 by default).

Reads either layout:

* the official benchmark: ``Final_Training/Images/000NN/*.ppm`` with ``GT-000NN.csv``
  (semicolon-separated) and ``Final_Test/Images/*.ppm`` with ``GT-final_test.csv``
  (optionally under a ``GTSRB/`` folder);
* the widely used PNG layout: ``Train.csv``, ``Test.csv`` (columns Width, Height,
  Roi.X1, Roi.Y1, Roi.X2, Roi.Y2, ClassId, Path), ``Train/<class>/*.png``, ``Test/*.png``.

Decoded arrays are cached (see :func:`advbench.kit.datafiles.cache_root`), keyed by the
annotation files and the image size.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
from pydantic import Field

from advbench import Dataset, DatasetArrays, hookimpl
from advbench.errors import DataError
from advbench.kit.datafiles import FileDatasetParams, Remote, cached, ensure_files, extract, locate

BASE = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370"
REMOTES = [
    Remote(f"{BASE}/GTSRB_Final_Training_Images.zip", md5="f33fd80ac59bff73c82d25ab499e03a3"),
    Remote(f"{BASE}/GTSRB_Final_Test_Images.zip", md5="c7e4e6327067d32654124b0fe9e82185"),
    Remote(f"{BASE}/GTSRB_Final_Test_GT.zip", md5="fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
]

CLASS_NAMES = [
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
]


class GTSRBParams(FileDatasetParams):
    image_size: int = Field(32, ge=8, le=256, description="Side of the square images after cropping to the ROI and resizing.")


class GTSRB(Dataset):
    """German traffic signs, 43 classes, ROI-cropped and resized (official .ppm or PNG layout)."""

    Params = GTSRBParams

    def load(self) -> DatasetArrays:
        root = locate(self.params.data_dir, "gtsrb", lambda d: _layout(d) is not None)
        if _layout(root) is None:
            ensure_files(root, REMOTES, self.params.download, present=False)
            for remote in REMOTES:
                extract(root / remote.filename, root)
                (root / remote.filename).unlink()
        layout = _layout(root)
        if layout is None:
            raise DataError(f"gtsrb: no GTSRB layout found in {root} (Train.csv, or Final_Training/Images)")
        train, test = _png_layout(root) if layout == "png" else _official_layout(root)
        size = self.params.image_size
        fingerprint = hashlib.sha256(repr((layout, str(root.resolve()), size, train, test)).encode()).hexdigest()[:16]

        def build():
            x_train, y_train = _images(train, size)
            x_test, y_test = _images(test, size)
            return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}

        arrays = cached(f"gtsrb-{fingerprint}", build)
        return DatasetArrays(
            x_train=arrays["x_train"].astype(np.float32) / 255.0,
            y_train=arrays["y_train"].astype(np.int64),
            x_test=arrays["x_test"].astype(np.float32) / 255.0,
            y_test=arrays["y_test"].astype(np.int64),
            num_classes=43,
            class_names=list(CLASS_NAMES),
            info={
                "folder": str(root),
                "layout": layout,
                "image_size": size,
                "train_images": len(train),
                "test_images": len(test),
            },
        )


def _layout(root: Path) -> str | None:
    if (root / "Train.csv").is_file() and (root / "Test.csv").is_file():
        return "png"
    if _official_root(root) is not None:
        return "official"
    return None


def _official_root(root: Path) -> Path | None:
    for base in (root, root / "GTSRB"):
        if (base / "Final_Training" / "Images").is_dir():
            return base
    return None


# An annotation: (image path, (x1, y1, x2, y2) region of interest, class id)


def _png_layout(root: Path):
    def read(name):
        with (root / name).open(newline="") as stream:
            return [(root / row["Path"], _roi(row), int(row["ClassId"])) for row in csv.DictReader(stream)]

    return read("Train.csv"), read("Test.csv")


def _official_layout(root: Path):
    base = _official_root(root)
    train = []
    for class_dir in sorted((base / "Final_Training" / "Images").iterdir()):
        annotations = class_dir / f"GT-{class_dir.name}.csv"
        if class_dir.is_dir() and annotations.is_file():
            train += _semicolon_csv(annotations, class_dir)
    test_images = base / "Final_Test" / "Images"
    candidates = [root / "GT-final_test.csv", base / "GT-final_test.csv", test_images / "GT-final_test.csv"]
    labelled = next((c for c in candidates if c.is_file()), None)
    if labelled is None:
        raise DataError(
            f"gtsrb: test labels GT-final_test.csv (from GTSRB_Final_Test_GT.zip) not found; looked in {', '.join(map(str, candidates))}"
        )
    return train, _semicolon_csv(labelled, test_images)


def _semicolon_csv(path: Path, folder: Path):
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter=";"))
    if rows and "ClassId" not in rows[0]:
        raise DataError(f"{path}: no ClassId column")
    return [(folder / row["Filename"], _roi(row), int(row["ClassId"])) for row in rows]


def _roi(row) -> tuple[int, int, int, int]:
    return tuple(int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))


def _images(annotations, size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images = np.zeros((len(annotations), size, size, 3), dtype=np.uint8)
    labels = np.zeros(len(annotations), dtype=np.int64)
    for i, (path, (x1, y1, x2, y2), label) in enumerate(annotations):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                # The ROI corners are inclusive pixel coordinates.
                box = (max(0, x1), max(0, y1), min(image.width, x2 + 1), min(image.height, y2 + 1))
                images[i] = np.asarray(image.crop(box).resize((size, size), Image.BILINEAR))
        except FileNotFoundError:
            raise DataError(f"gtsrb: image listed in the annotations is missing: {path}") from None
        except OSError as exc:
            raise DataError(f"{path}: corrupt or truncated image ({exc})") from None
        if not 0 <= label < 43:
            raise DataError(f"{path}: class {label} outside 0..42")
        labels[i] = label
    return images, labels


@hookimpl
def advbench_register_datasets(register):
    register("gtsrb", GTSRB)
