"""Finding, fetching and checking dataset files.

Where data lives: a dataset's ``data_dir`` parameter, else the ``ADVBENCH_DATA``
environment variable, else a per-user directory (``$XDG_DATA_HOME/advbench``, by default
``~/.local/share/advbench``).  Each dataset reads its own sub-folder (``mnist/``,
``cifar10/``, ``gtsrb/``...).  Missing files are downloaded from the official sources
when allowed, checksum-verified, and moved into place atomically; offline, or when a
download fails, the error names the files expected and where to put them.  Corrupt or
truncated files raise :class:`DataError` instead of being loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advbench.errors import DataError

CHUNK = 1 << 20


def data_root(data_dir: str | None) -> Path:
    """The directory holding the dataset folders."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("ADVBENCH_DATA"):
        return Path(os.environ["ADVBENCH_DATA"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "advbench"


def cache_root() -> Path:
    """Where preprocessed arrays are cached (``ADVBENCH_CACHE`` or ``~/.cache/advbench``)."""
    if os.environ.get("ADVBENCH_CACHE"):
        return Path(os.environ["ADVBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "advbench"


@dataclass(frozen=True)
class Remote:
    """A file published at ``url`` with a known checksum (``md5`` or ``sha256``)."""

    url: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (read in chunks: model files can be large)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: Remote, folder: Path, show_progress: bool = True) -> Path:
    """Download ``remote`` into ``folder``: to a temporary file, verify the checksum,
    then rename into place.  Raises :class:`DataError` on any failure, leaving nothing behind."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.filename
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{remote.filename}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                response = urllib.request.urlopen(remote.url, timeout=60)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DataError(f"could not download {remote.url}: {reason}") from None
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                _copy_with_progress(response, out, total, remote.filename, show_progress)
        for algorithm in ("md5", "sha256"):
            expected = getattr(remote, algorithm)
            if expected and file_digest(Path(temporary), algorithm) != expected:
                raise DataError(f"{remote.url}: downloaded file failed its {algorithm} check (expected {expected}); not used")
        os.replace(temporary, target)
        return target
    finally:
        Path(temporary).unlink(missing_ok=True)


def _copy_with_progress(response, out, total, name, show_progress) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        f"downloading {name}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(name, total=total)
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            out.write(block)
            progress.advance(task, len(block))


def locate(data_dir: str | None, folder: str, marker) -> Path:
    """The dataset's folder: ``data_dir`` itself when ``marker(data_dir)`` says it already
    is one (so ``data_dir`` may name the dataset folder or its parent), else ``<root>/<folder>``."""
    if data_dir and marker(Path(data_dir).expanduser()):
        return Path(data_dir).expanduser()
    return data_root(data_dir) / folder


def ensure_files(folder: Path, remotes: list[Remote], download: bool, present: bool) -> None:
    """Download the ``remotes`` into ``folder`` unless ``present``; explain what is missing otherwise
    (the caller names the dataset: :func:`advbench.core.data.load_arrays`)."""
    if present:
        return
    hint = (
        f"files not found in {folder}. Put the official files there "
        f"({', '.join(r.filename for r in remotes)}, from {', '.join(sorted({r.url.rsplit('/', 1)[0] for r in remotes}))}), "
        "or set the spec's dataset data_dir (or the ADVBENCH_DATA environment variable) to the folder that contains "
        f"{folder.name}/"
    )
    if not download:
        raise DataError(hint + " (downloads are off: download: false)")
    try:
        for remote in remotes:
            fetch(remote, folder, show_progress=sys.stderr.isatty())
    except DataError as exc:
        raise DataError(f"{hint}. The download failed: {exc}") from None


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it ends in ``.gz``; corrupt archives raise :class:`DataError`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated ({exc})") from None


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format), checking the header against the length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(IDX_TYPES[data[2]])
    dims = data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: corrupt or truncated: {len(data)} bytes, the header announces {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def cached(key: str, build) -> dict[str, np.ndarray]:
    """Arrays from the cache under ``key``, or ``build()``'s result, then cached atomically."""
    path = cache_root() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except OSError:
        pass  # an unwritable cache only costs time
    return arrays


def extract(archive: Path, folder: Path) -> None:
    """Extract a .zip or .tar.gz archive into ``folder``, refusing paths that leave it."""
    import tarfile
    import zipfile

    folder = folder.resolve()
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as bundle:
            for name in bundle.namelist():
                if not (folder / name).resolve().is_relative_to(folder):
                    raise DataError(f"{archive}: unsafe path {name!r} in the archive")
            bundle.extractall(folder)
    else:
        with tarfile.open(archive) as bundle:
            for member in bundle.getmembers():
                if not (folder / member.name).resolve().is_relative_to(folder) or member.issym() or member.islnk():
                    raise DataError(f"{archive}: unsafe member {member.name!r} in the archive")
            bundle.extractall(folder)


def move_into_place(source: Path, target: Path) -> None:
    """Replace ``target`` by ``source`` (same file system)."""
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.replace(source, target)


from pydantic import Field  # noqa: E402

from advbench.contract.components import SPEC_FOLDER, DatasetParams  # noqa: E402


class FileDatasetParams(DatasetParams):
    """Parameters shared by the datasets read from files."""

    data_dir: str | None = Field(
        None,
        min_length=1,
        json_schema_extra=SPEC_FOLDER,
        description="Folder that holds the dataset's folder (relative to the spec); default $ADVBENCH_DATA, else ~/.local/share/advbench.",
    )
    download: bool = Field(True, description="Download missing files from the official source (checksum-verified).")
