"""Loading plugins: entry points of the ``advbench`` group, then spec-local files.

Each plugin module is imported and registered on its own, so a plugin that fails to
import or whose registration raises is reported and the others keep working; with
``strict=True`` such a failure raises :class:`PluginError` instead.  Set
``ADVBENCH_DISABLE_PLUGINS`` to a comma-separated list of plugin (entry point) names to
skip them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pluggy

from advbench.contract import hookspecs
from advbench.contract.registry import Registry
from advbench.errors import PluginError

ENTRY_POINT_GROUP = "advbench"

HOOKS = {
    "dataset": "advbench_register_datasets",
    "architecture": "advbench_register_architectures",
    "defense": "advbench_register_defenses",
    "attack": "advbench_register_attacks",
    "certifier": "advbench_register_certifiers",
}


@dataclass
class PluginInfo:
    """What ``advbench plugins`` shows for one plugin."""

    name: str
    source: str  # distribution name, or the file a spec loaded
    version: str
    components: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    error: str | None = None
    modules: list[str] = field(default_factory=list)  # the modules it was loaded from
    _fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """What identifies the plugin's code: the SHA-256 of a spec-local file, or an
        installed distribution's version and the SHA-256 of its packages' source files."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self)
        return self._fingerprint


class PluginWarning(UserWarning):
    """A plugin failed to load or register; the others were loaded."""


class PluginHost:
    """A plugin manager plus the registry its plugins filled."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: dict[str, PluginInfo] = {}

    @property
    def failures(self) -> list[PluginInfo]:
        return [info for info in self.plugins.values() if info.error]

    # -- loading ---------------------------------------------------------------------

    def load_entry_points(self) -> None:
        disabled = {n.strip() for n in os.environ.get("ADVBENCH_DISABLE_PLUGINS", "").split(",") if n.strip()}
        for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_builtin_first):
            if entry_point.name in disabled or entry_point.name in self.plugins:
                continue
            # An installed distribution's metadata is read inside the isolation too: a
            # dist-info without a Name or an entry point that is no module reference is
            # reported as that plugin's failure, never the end of every command.
            try:
                dist = getattr(entry_point, "dist", None)
                info = PluginInfo(
                    name=entry_point.name,
                    source=str((dist.metadata["Name"] if dist else None) or "?"),
                    version=str((dist.version if dist else None) or "?"),
                    modules=[entry_point.module],
                )
                if not info.modules[0]:
                    raise ValueError(f"entry point value {entry_point.value!r} names no module")
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                info = PluginInfo(name=str(entry_point.name), source="?", version="?")
                self._fail(info, f"unreadable metadata: {_describe(exc)}", exc)
                continue
            try:
                module = entry_point.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a broken plugin must not take the others down, nor end the host
                self._fail(info, f"import failed: {_describe(exc)}", exc)
                continue
            self._register(info, module)

    def load_file(self, path: str | Path) -> PluginInfo:
        """Import a plugin module from a file (a spec's ``plugins:`` entry) and register it.

        Errors raise :class:`PluginError`: the spec asked for this file explicitly.
        """
        path = Path(path).resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module_name = f"advbench_local_{path.stem}_{digest}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"{path}: not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # sys.exit() in a plugin must not end the host
                del sys.modules[module_name]
                raise PluginError(f"{path}: import failed: {_last_frames(exc)}") from None
        info = PluginInfo(name=path.name, source=str(path), version="local file", modules=[module_name])
        self._register(info, module, raise_errors=True)
        return info

    def _register(self, info: PluginInfo, module: ModuleType, raise_errors: bool = False) -> None:
        self.plugins[info.name] = info
        try:
            self.manager.register(module, name=info.name)
            unknown = [
                attr
                for attr in dir(module)
                if attr.startswith("advbench_") and attr not in HOOKS.values() and hasattr(getattr(module, attr), "advbench_impl")
            ]
            if unknown:
                raise PluginError(f"unknown hook(s) {', '.join(unknown)} (known: {', '.join(HOOKS.values())})")
            for kind, hook_name in HOOKS.items():
                for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                    if impl.plugin_name != info.name:
                        continue
                    register = self._register_callback(kind, info)
                    kwargs = {"register": register}
                    impl.function(**{arg: kwargs[arg] for arg in impl.argnames if arg in kwargs})
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._unregister(info)
            if raise_errors:
                raise PluginError(f"{info.source}: {exc if isinstance(exc, PluginError) else _describe(exc)}") from None
            self._fail(info, f"registration failed: {exc if isinstance(exc, PluginError) else _describe(exc)}", exc)

    def _register_callback(self, kind: str, info: PluginInfo):
        def register(name: str, cls: type) -> None:
            self.registry.register(kind, name, cls, plugin=info.name)
            info.components.append((kind, name))

        register.__doc__ = f"Register a {kind}: register(name, cls)."
        return register

    def _unregister(self, info: PluginInfo) -> None:
        # Drop whatever the plugin registered before failing, so the rest stays consistent.
        for kind, name in info.components:
            self.registry._entries[kind].pop(name, None)
        info.components.clear()
        if self.manager.has_plugin(info.name):
            self.manager.unregister(name=info.name)

    def _fail(self, info: PluginInfo, message: str, exc: Exception) -> None:
        info.error = message
        self.plugins[info.name] = info
        if self.strict:
            raise PluginError(f"plugin {info.name!r} ({info.source}): {message}") from None
        warnings.warn(f"plugin {info.name!r} ({info.source}) was not loaded: {message}", PluginWarning, stacklevel=3)


RECORD_MAKING = ("__init__.py", "errors.py", "lazy.py", "text.py", "contract/", "kit/", "core/", "spec/", "runs/")
"""The parts of advbench's own source (paths inside the package) that can change a record:
the plugin contract, the kit plugins compute with, the core's data subsets, model loading,
training loop and trust checks, the spec's resolution into parameters and the run
machinery that calls plugins and writes records.  A job's key covers them
(with the plugin's own code); ``results/`` (renderers), ``cli/``, ``api.py`` and
``testing.py`` only read or present records, so editing them reuses every finished job."""


def _fingerprint(info: PluginInfo) -> str:
    if info.version == "local file":
        return "sha256:" + hashlib.sha256(Path(info.source).read_bytes()).hexdigest()[:16]
    # The packages its entry points come from, by their source: an editable install, or a
    # reinstall of a changed checkout, changes the code under the same version.  advbench's
    # own built-ins run on the host's record-making code as well.
    packages = sorted({module.split(".")[0] for module in info.modules})
    digest = _source_digest(packages)
    if info.source == "advbench":
        digest = hashlib.sha256(f"{digest}+{record_code_digest()}".encode()).hexdigest()[:16]
    return f"{info.source}=={info.version}+source:{digest}"


def record_fingerprint() -> str:
    """advbench's record-making code (:data:`RECORD_MAKING`): its version and the SHA-256 of
    those source files.  Part of every job's key."""
    from advbench import __version__

    return f"advbench=={__version__}+source:{record_code_digest()}"


def host_fingerprint() -> str:
    """All of advbench's code: its version and the SHA-256 of its whole source (what drew a
    leaderboard: a changed renderer redraws it, while the jobs' records stay valid)."""
    from advbench import __version__

    return f"advbench=={__version__}+source:{_source_digest(['advbench'])}"


_SOURCE_DIGESTS: dict[tuple, str] = {}


def record_code_digest(folder: Path | None = None) -> str:
    """SHA-256 over the files of :data:`RECORD_MAKING` in advbench's package folder (or in
    ``folder``, a copy of it)."""
    if folder is not None:
        return _digest(_package_files("advbench", [Path(folder)], _record_making))
    key = ("advbench", RECORD_MAKING)
    if key not in _SOURCE_DIGESTS:
        _SOURCE_DIGESTS[key] = _digest(_package_files("advbench", keep=_record_making))
    return _SOURCE_DIGESTS[key]


def _record_making(name: str) -> bool:
    return name in RECORD_MAKING or name.startswith(tuple(part for part in RECORD_MAKING if part.endswith("/")))


def _source_digest(packages: list[str]) -> str:
    """SHA-256 over the Python source files of ``packages`` (paths and contents)."""
    key = tuple(packages)
    if key not in _SOURCE_DIGESTS:
        _SOURCE_DIGESTS[key] = _digest(entry for package in packages for entry in _package_files(package))
    return _SOURCE_DIGESTS[key]


def _package_files(package: str, folders: list[Path] | None = None, keep=lambda name: True):
    """``(package, name inside it, path)`` of each Python source file of an installed package
    (or of the copy in ``folders``) whose name ``keep`` accepts, in a fixed order."""
    spec = importlib.util.find_spec(package) if folders is None else None
    if folders is None:
        folders = [Path(f) for f in (spec.submodule_search_locations or [])] if spec else []
        if spec and spec.origin and not folders:  # a single-module package
            yield package, Path(spec.origin).name, Path(spec.origin)
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            name = path.relative_to(folder).as_posix()
            if keep(name):
                yield package, name, path


def _digest(files) -> str:
    digest = hashlib.sha256()
    for package, name, path in files:  # the path inside the package too: moving a module changes the code
        digest.update(f"{package}:{name}".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _builtin_first(entry_point) -> tuple[int, str]:
    try:
        dist = getattr(entry_point, "dist", None)
        is_builtin = dist is not None and dist.metadata["Name"] == "advbench"
    except Exception:  # damaged metadata: reported when the plugin loads
        is_builtin = False
    return (0 if is_builtin else 1, str(entry_point.name))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{exc.__class__.__name__}: {exc}"


def _last_frames(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{_describe(exc)}{where}"


def load_plugins(strict: bool = False, files: list[str | Path] = ()) -> PluginHost:
    """Return a host with every entry-point plugin loaded, then ``files``."""
    host = PluginHost(strict=strict)
    host.load_entry_points()
    for path in files:
        host.load_file(path)
    return host
