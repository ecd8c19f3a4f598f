"""Reading a spec: YAML to the resolved :class:`~advbench.spec.resolved.Spec`, collecting
every problem before any work starts; each names the file, the line where it can, the
field path (``models[1].architecture.hidden``) and what was expected.
"""

from __future__ import annotations

import reprlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from advbench.contract.components import Params
from advbench.contract.plugins import load_plugins
from advbench.contract.registry import UnknownComponentError
from advbench.errors import PluginError, Problem, SpecError
from advbench.spec.data_checks import data_problems
from advbench.spec.resolved import ComponentRef, DefenseRefs, ModelPlan, Spec, TorchModule, spec_path_kind
from advbench.spec.schema import ComponentEntry, EvaluationSpec, MethodEntry, ModelSpec, SpecModel, ThreatModel, TorchModuleSpec
from advbench.text import close_matches

MAX_SPEC_BYTES = 1 << 20
"""A spec file is at most 1 MiB: larger ones are refused before they are parsed."""

MAX_DEPTH = 32
"""Mappings and lists nest at most this deep in a spec (the deepest real one nests 6)."""


def _nesting(text: str) -> tuple[int, int | None]:
    """The deepest nesting of YAML flow collections (``[``, ``{``) in ``text`` and its line,
    counted without parsing (a parser recurses once per level); quoted text is skipped."""
    depth = deepest = 0
    line = where = 1
    quote = None
    for character in text:
        if character == "\n":
            line += 1
        if quote:
            quote = None if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character in "[{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, line
        elif character in "]}":
            depth = max(0, depth - 1)
        elif character == "#":
            quote = "\n"  # a comment runs to the end of the line
    return deepest, where if deepest else None


def _depth(data) -> int:
    """How deeply mappings and lists nest in ``data`` (iteratively: no recursion to overflow)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                todo.extend((value, level + 1) for value in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_spec_file(path: Path):
    """The YAML a spec file holds, and its node tree (for line numbers), read with every
    guard (size, UTF-8, nesting, YAML syntax): a :class:`SpecError` otherwise, never a
    traceback.  Every reader of a spec file goes through it."""
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise SpecError([Problem(shown, "", "file not found")])
    if not path.is_file():
        raise SpecError([Problem(shown, "", "not a file (a directory?); give the spec's YAML file")])
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            [
                Problem(
                    shown,
                    "",
                    f"{size:,} bytes; a spec is at most {MAX_SPEC_BYTES:,} (it names data and "
                    "models by file, it does not hold them)",
                )
            ]
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError([Problem(shown, "", f"exists but cannot be read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SpecError(
            [
                Problem(
                    shown,
                    "",
                    f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the spec as UTF-8",
                    line,
                )
            ]
        ) from None
    deepest, line = _nesting(text)
    if deepest > MAX_DEPTH:
        raise SpecError([Problem(shown, "", f"nested {deepest} levels deep; a spec nests at most {MAX_DEPTH}", line)])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([Problem(shown, "", f"invalid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
    except RecursionError:
        raise SpecError([Problem(shown, "", f"nested too deeply to read; a spec nests at most {MAX_DEPTH} levels")]) from None
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise SpecError([Problem(shown, "", f"nested {depth} levels deep; a spec nests at most {MAX_DEPTH}")])
    return data, root


def load_spec(path: str | Path, strict: bool = False, check_data: bool = False) -> Spec:
    """Read, validate and resolve a spec file; raise :class:`SpecError` with every problem.

    With ``check_data``, the spec is also checked against its data and pretrained models
    (:mod:`advbench.spec.data_checks`), on every part that is valid on its own, so that
    one pass reports every problem.
    """

    path = Path(path)
    data, root = read_spec_file(path)
    shown = str(path)
    locator = Locator(shown, root)
    problems = locator.duplicate_keys()
    if not isinstance(data, dict):
        raise SpecError(problems + [Problem(shown, "", "expected a mapping with name, dataset, models, threat_models, ...", 1)])
    return _validate(data, path, locator, problems, strict, check_data)


def load_spec_data(
    data: dict, folder: str | Path = ".", strict: bool = False, check_data: bool = False, name: str = "<spec>"
) -> Spec:
    """Validate and resolve a spec given as data (the mapping a YAML file holds), as
    :func:`load_spec` does; relative paths in it are relative to ``folder``, and problems
    are reported against ``name`` (without line numbers)."""
    if not isinstance(data, dict):
        raise SpecError(
            [Problem(name, "", f"expected a mapping with name, dataset, models, threat_models, ... (got {type(data).__name__})")]
        )
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise SpecError([Problem(name, "", f"nested {depth} levels deep; a spec nests at most {MAX_DEPTH}")])
    folder = Path(folder)
    return _validate(data, folder / name, Locator(name, None), [], strict, check_data, file=None)


_KEEP = object()


def _validate(data: dict, path: Path, locator: "Locator", problems: list, strict: bool, check_data: bool, file=_KEEP) -> Spec:
    """The resolved spec from its data; ``path`` locates relative paths (its folder) and
    becomes :attr:`Spec.file` (unless ``file`` says otherwise: ``None`` for a spec given as data)."""
    shown = locator.file
    # Spec-local plugin files first: they may register components the spec uses.
    plugin_files: list[Path] = []
    entries = data.get("plugins") or []
    if not isinstance(entries, list):
        problems.append(
            locator.problem(("plugins",), f"expected a list of Python files, e.g. [{entries!r}] (got {type(entries).__name__})")
        )
        entries = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            problems.append(locator.problem(("plugins", index), f"expected the file name of a Python module (got {entry!r})"))
            continue
        problem = _file_problem(path.parent / entry, "plugin file")
        if problem:
            problems.append(locator.problem(("plugins", index), problem))
        else:
            plugin_files.append((path.parent / entry).resolve())
    try:
        host = load_plugins(strict=strict)
    except PluginError as exc:
        raise SpecError(problems + [Problem(shown, "", str(exc))]) from None
    for index, plugin_path in enumerate(plugin_files):
        try:
            host.load_file(plugin_path)
        except PluginError as exc:
            problems.append(locator.problem(("plugins", index), str(exc)))

    try:
        model = SpecModel.model_validate(
            {k: v for k, v in data.items() if k != "plugins"} | {"plugins": [str(p) for p in plugin_files]}
        )
    except ValidationError as exc:
        problems.extend(locator.problem(err["loc"], describe_error(err, SpecModel)) for err in _misspelled_once(exc.errors()))
        model = None
    resolver = Resolver(host.registry, locator, path.parent)
    spec = _resolve(model, data, path, resolver, plugin_files, host)
    problems += resolver.problems
    if spec is not None and model is not None and not problems:
        problems += _cross_checks(spec, locator)
    if check_data and spec is not None and spec.dataset is not None:
        problems += data_problems(spec, locator)
    if problems:
        raise SpecError(problems)
    if file is not _KEEP:
        spec.file = file
    spec.locator = locator
    return spec


def check_data(spec: Spec) -> None:
    """The checks of ``spec`` against its data and pretrained models (what ``check_data=True``
    adds to :func:`load_spec`), for a spec loaded without them: a :class:`SpecError` with every
    problem.  Does nothing when they ran already."""
    if spec.loaded is not None:
        return
    problems = data_problems(spec, spec.locator or Locator(str(spec.file or "<spec>"), None))
    if problems:
        raise SpecError(problems)


def _file_problem(path: Path, what: str) -> str | None:
    """What is wrong with a file a spec names: missing, a directory, unreadable; or ``None``."""
    import os

    if not path.exists():
        return f"{what} not found: {path}"
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return (
                f"{path} is a TensorFlow SavedModel directory; advbench loads Keras 3 `.keras` files: load it "
                "with TensorFlow and save it with model.save('model.keras')"
            )
        return f"{what} {path} is a directory, not a file"
    if not os.access(path, os.R_OK):
        return f"{what} {path} exists but cannot be read (permission denied)"
    return None


def _resolve(model, data: dict, path: Path, resolver: "Resolver", plugin_files, host) -> "Spec | None":
    """The resolved spec; when the spec as a whole did not validate, a partial one made of
    its parts that do (for the data checks), or ``None`` without a usable dataset."""
    if model is not None:
        return Spec(
            file=path,
            name=model.name,
            seed=model.seed,
            dataset=resolver.resolve("dataset", model.dataset, ("dataset",)),
            models=[_model_plan(m, i, resolver, path) for i, m in enumerate(model.models)],
            threat_models=model.threat_models,
            attacks=[resolver.resolve("attack", a, ("attacks", i)) for i, a in enumerate(model.attacks)],
            certifiers=[resolver.resolve("certifier", c, ("certifiers", i)) for i, c in enumerate(model.certifiers)],
            evaluation=model.evaluation,
            plugin_files=plugin_files,
            host=host,
            resources=model.resources,
        )

    # Each part on its own: components are resolved (and their problems reported) wherever
    # the entry names one; sections that validate are kept for the data checks.
    def part(cls, value):
        try:
            return cls.model_validate(value)
        except (ValidationError, TypeError):
            return None

    def entry(value, loc, kind, label=False):
        parsed = part(MethodEntry if label else ComponentEntry, value) if isinstance(value, dict) else None
        return resolver.resolve(kind, parsed, loc) if parsed is not None else None

    dataset = entry(data.get("dataset"), ("dataset",), "dataset")
    for kind, section in (("attack", "attacks"), ("certifier", "certifiers")):
        for i, value in enumerate(data.get(section) or [] if isinstance(data.get(section), list) else []):
            entry(value, (section, i), kind, label=True)
    models, model_index = [], []
    for i, value in enumerate(data.get("models") if isinstance(data.get("models"), list) else []):
        parsed = part(ModelSpec, value)
        if parsed is not None:
            models.append(_model_plan(parsed, i, resolver, path))
            model_index.append(i)
        elif isinstance(value, dict):
            entry(value.get("architecture"), ("models", i, "architecture"), "architecture")
            defenses = value.get("defense")
            for k, d in enumerate(defenses if isinstance(defenses, list) else [defenses]):
                entry(d, ("models", i, "defense", k) if isinstance(defenses, list) else ("models", i, "defense"), "defense")
    threats, threat_index = [], []
    for i, value in enumerate(data.get("threat_models") if isinstance(data.get("threat_models"), list) else []):
        parsed = part(ThreatModel, value)
        if parsed is not None:
            threats.append(parsed)
            threat_index.append(i)
    seed = data.get("seed", 0)
    if dataset is None or not isinstance(seed, int) or isinstance(seed, bool):
        return None
    return Spec(
        file=path,
        name=str(data.get("name", "")),
        seed=seed,
        dataset=dataset,
        models=models,
        threat_models=threats,
        attacks=[],
        certifiers=[],
        evaluation=_evaluation_part(data.get("evaluation")),
        plugin_files=plugin_files,
        host=host,
        model_index=model_index,
        threat_index=threat_index,
    )


def _evaluation_part(raw) -> "EvaluationSpec | None":
    """The evaluation section, or at least its number of examples, for the data checks."""
    raw = raw if isinstance(raw, dict) else {}
    for candidate in (raw, {"examples": raw.get("examples")}):
        try:
            return EvaluationSpec.model_validate(candidate)
        except ValidationError:
            continue
    return None


def _model_plan(m: "ModelSpec", i: int, resolver: "Resolver", path: Path) -> "ModelPlan":
    plan = ModelPlan(
        name=m.name,
        architecture=resolver.resolve("architecture", m.architecture, ("models", i, "architecture")) if m.architecture else None,
        defense=DefenseRefs(
            [resolver.resolve("defense", m.defense, ("models", i, "defense"))]
            if isinstance(m.defense, ComponentEntry)
            else [resolver.resolve("defense", d, ("models", i, "defense", k)) for k, d in enumerate(m.defense)]
        ),
        training=m.training,
        path=(path.parent / m.path) if m.path else None,
        seed=m.seed,
        torch=_torch_module(path.parent, m.torch) if m.torch else None,
        outputs=m.outputs,
        normalization=m.normalization.model_dump() if m.normalization is not None else None,
    )
    locate = resolver.locator.problem
    if plan.path is not None:
        problem = _file_problem(plan.path, "model file")
        if problem:
            resolver.problems.append(locate(("models", i, "path"), problem))
    if plan.torch is not None:
        for file, field_name in ((plan.torch.file, "module"), (plan.torch.weights, "weights")):
            problem = _file_problem(file, f"{field_name} file") if file is not None else None
            if problem:
                resolver.problems.append(locate(("models", i, "torch", field_name), problem))
    return plan


def _cross_checks(spec: "Spec", locator: "Locator") -> list[Problem]:
    """Checks across sections: flips the dataset forbids, and each component's own
    ``check_spec`` against the rest of the spec (e.g. a transfer attack's source model)."""
    problems = []
    for i, plan in enumerate(spec.models):
        if plan.training.augmentation.flip and not spec.dataset.cls.mirror_invariant:
            problems.append(
                locator.problem(
                    ("models", i, "training", "augmentation", "flip"),
                    f"dataset {spec.dataset.name!r} does not allow horizontal flips (its classes are not mirror-invariant)",
                )
            )
    references = [(("dataset",), spec.dataset)]
    references += [(("models", i, "architecture"), m.architecture) for i, m in enumerate(spec.models)]
    references += [(("models", i, "defense"), ref) for i, m in enumerate(spec.models) for ref in m.defense.refs]
    references += [(("attacks", i), a) for i, a in enumerate(spec.attacks)] + [
        (("certifiers", i), c) for i, c in enumerate(spec.certifiers)
    ]
    for loc, ref in references:
        if ref is None:
            continue
        try:
            message = ref.cls.check_spec(ref.params, spec)
        except Exception as exc:  # a plugin's own check must not end validation with a traceback
            message = f"the {ref.kind} plugin's check_spec raised {exc.__class__.__name__}: {exc}"
        if message:
            problems.append(locator.problem(loc, message))
    names = [m.name for m in spec.models]
    for i, ref in enumerate(spec.attacks):
        if ref is None:
            continue
        try:
            needed = list(ref.cls.models_needed(ref.params))
        except Exception as exc:  # noqa: BLE001 (a plugin's hook: a message, not a traceback)
            problems.append(
                locator.problem(("attacks", i), f"the attack plugin's models_needed raised {exc.__class__.__name__}: {exc}")
            )
            continue
        for name in needed:
            if name not in names:
                problems.append(
                    locator.problem(
                        ("attacks", i),
                        f"needs the model {name!r}, which is not a model of this spec (models: {', '.join(names)})",
                    )
                )
    return problems


def _torch_module(folder: Path, entry: TorchModuleSpec) -> TorchModule:
    file, attribute = entry.module.rsplit(":", 1)
    return TorchModule(
        folder / file, attribute, dict(entry.arguments), folder / entry.weights if entry.weights else None, entry.layout
    )


class Resolver:
    def __init__(self, registry, locator: "Locator", folder: Path):
        self.registry = registry
        self.locator = locator
        self.folder = folder
        self.problems: list[Problem] = []

    def resolve(self, kind: str, entry: ComponentEntry, loc: tuple) -> ComponentRef | None:
        try:
            cls = self.registry.get(kind, entry.name)
        except UnknownComponentError as exc:
            self.problems.append(self.locator.problem(loc + ("name",), str(exc)))
            return None
        try:
            params = cls.Params.model_validate(entry.options)
        except ValidationError as exc:
            for err in exc.errors():
                self.problems.append(self.locator.problem(loc + tuple(err["loc"]), describe_error(err, cls.Params)))
            return None
        except Exception as exc:  # a plugin's validator raising something else is still a message
            self.problems.append(
                self.locator.problem(
                    loc, f"the {kind} {entry.name!r} could not check its parameters: {exc.__class__.__name__}: {exc}"
                )
            )
            return None
        params = self._spec_relative(params)
        label = getattr(entry, "label", None) or entry.name
        return ComponentRef(kind, entry.name, cls, params, label, self.registry.plugin_of(kind, entry.name))

    def _spec_relative(self, params):
        """Parameters marked as files or folders (``json_schema_extra={"spec_path": ...}``)
        are relative to the spec's folder, not to where advbench runs."""
        updates = {}
        for name, info in type(params).model_fields.items():
            value = getattr(params, name)
            if spec_path_kind(info) and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                updates[name] = str((self.folder / value).resolve())
        return params.model_copy(update=updates) if updates else params


_SHORT = reprlib.Repr()  # a 5 MB list in a wrong parameter is shown by its first items
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = 5
_SHORT.maxlevel = 2


def describe_error(err: dict, params_model: type[BaseModel] | None = None) -> str:
    """Turn a pydantic error into 'what was expected (got what)'."""
    kind = err["type"]
    if kind == "extra_forbidden":
        field = err["loc"][-1] if err["loc"] else "?"
        model = _model_at(params_model, err["loc"][:-1]) if params_model is not None else None
        if model is None:
            return f"unknown field {field!r}"
        known = _field_names(model)
        close = close_matches(field, known)
        hint = f"did you mean {close[0]!r}? " if close else ""
        what = "parameter" if issubclass(model, Params) else "field"
        return f"unknown {what} {field!r} ({hint}known: {', '.join(known) or 'none'})"
    if kind == "missing":
        return "required field missing"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in err and kind not in ("value_error", "assertion_error") and not isinstance(err["input"], dict):
        message += f" (got {_SHORT.repr(err['input'])})"
    return message


def _misspelled_once(errors: list[dict]) -> list[dict]:
    """The errors less a required field's "missing" where an unknown field beside it is
    that field misspelled (`thret_models:`): its did-you-mean says all there is to say."""
    unknown = set()
    for err in errors:
        model = _model_at(SpecModel, err["loc"][:-1]) if err["type"] == "extra_forbidden" and err["loc"] else None
        if model is not None:
            unknown.update((tuple(err["loc"][:-1]), match) for match in close_matches(err["loc"][-1], _field_names(model)))
    return [err for err in errors if not (err["type"] == "missing" and (tuple(err["loc"][:-1]), err["loc"][-1]) in unknown)]


def _field_names(model: type[BaseModel]) -> list[str]:
    """The names a spec writes for ``model``'s fields (their aliases where they have one)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` below ``model`` (through
    lists and optional fields), or ``None``."""
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) or next((i for i in model.model_fields.values() if i.alias == part), None)
        if info is None:
            return None
        model = _inner_model(info.annotation)
        if model is None:
            return None
    return model


def _inner_model(annotation) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


class Locator:
    """Maps a field path to its line in the YAML file."""

    def __init__(self, file: str, root: yaml.Node | None):
        self.file = file
        self.root = root

    def problem(self, loc: tuple, message: str) -> Problem:
        return Problem(self.file, _format_path(loc), message, self.line(loc))

    def line(self, loc: tuple) -> int | None:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        child, line = value, key.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    def duplicate_keys(self) -> list[Problem]:
        problems: list[Problem] = []

        def walk(node: yaml.Node, loc: tuple) -> None:
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key, value in node.value:
                    if key.value in seen:
                        problems.append(
                            Problem(self.file, _format_path(loc + (key.value,)), "duplicate key", key.start_mark.line + 1)
                        )
                    seen.add(key.value)
                    walk(value, loc + (key.value,))
            elif isinstance(node, yaml.SequenceNode):
                for index, value in enumerate(node.value):
                    walk(value, loc + (index,))

        if self.root is not None:
            walk(self.root, ())
        return problems


def _format_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-", "list[", "dict[")):
            continue  # pydantic's internal union/validator labels
        else:
            text += f".{part}" if text else str(part)
    return text
