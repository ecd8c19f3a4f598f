"""VNN-LIB properties (the VNN-COMP subset) read into boxes and linear output constraints.

A property file declares inputs ``X_i`` and outputs ``Y_j`` (``(declare-const X_0 Real)``)
and asserts constraints over them; the assertions together describe the *counterexamples*:
``sat`` means some input satisfies all of them, ``unsat`` that the network is safe.  The
subset read here is the one VNN-COMP uses:

- inputs: bounds on single inputs, ``(<= X_i c)`` and ``(>= X_i c)`` (any finite value),
  which make a box;
- outputs: linear (in)equalities ``<=`` / ``>=`` between linear terms of the outputs
  (numbers, ``Y_j``, ``+``, ``-``, ``*`` by a number);
- ``and`` and ``or`` nested freely, also around input bounds (several boxes).

The file is read into :class:`Property`: a list of :class:`Case` (one box with the output
constraints that apply there), each case's counterexamples being the inputs of its box
whose outputs satisfy one of its clauses ``A y <= b`` (every row).  A robustness property
(one box, every clause a single row ``Y_label - Y_j <= 0``) is recognised as such
(:meth:`Case.robustness`).  Gzip-compressed files (``.vnnlib.gz``) are read as they are.

Alongside a parse error this names the file and the line, and a property outside the
subset is refused saying what is read.  The registry's parsers were tried first: ``vnnlib``
1.x reads only VNN-LIB 2.0 (it rejects VNN-COMP 2022's files at their first assertion), and
0.0.1 is a source package compiled at install time that reads only uncompressed files.
"""

from __future__ import annotations

import bisect
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advbench.errors import AdvbenchError

SUBSET = (
    "declare-const of X_i / Y_j as Real; assert of <= and >= between linear terms (numbers, variables, +, -, "
    "* by a number), nested in and / or; inputs only bounded one at a time ((<= X_i c), (>= X_i c))"
)
"""What is read, named in every refusal."""

_TOKEN = re.compile(r";[^\n]*|\(|\)|[^\s()]+")
_VARIABLE = re.compile(r"^([XY])_(\d+)$")


class VnnlibError(AdvbenchError):
    """A property file that cannot be read, or one outside the subset advbench decides."""

    exit_code = 2


@dataclass
class Case:
    """One box of inputs and the output constraints whose satisfaction inside it is a
    counterexample: ``clauses`` a list of ``(A, b)``, the outputs ``y`` of a counterexample
    satisfying ``A y <= b`` (every row) for at least one of them."""

    lower: np.ndarray
    upper: np.ndarray
    clauses: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def violated(self, outputs: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
        """Per row of ``outputs`` (N, outputs), whether it satisfies some clause (a
        counterexample's outputs), each row of ``A y <= b`` within ``tolerance``."""
        outputs = np.asarray(outputs, np.float64)
        hit = np.zeros(len(outputs), bool)
        for A, b in self.clauses:
            hit |= np.all(outputs @ A.T <= b + tolerance, axis=1)
        return hit

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Per row of ``points`` (N, inputs), whether it lies in the box."""
        points = np.asarray(points, np.float64)
        return np.all((points >= self.lower) & (points <= self.upper), axis=1)

    def robustness(self) -> tuple[int, list[int]] | None:
        """``(label, others)`` where the clauses are exactly ``Y_label - Y_j <= 0``, one per
        ``j`` of ``others``: the property that the label stays on top; else None."""
        labels, others = set(), []
        for A, b in self.clauses:
            if A.shape[0] != 1 or b[0] != 0 or np.count_nonzero(A[0]) != 2 or sorted(A[0][A[0] != 0]) != [-1.0, 1.0]:
                return None
            labels.add(int(np.flatnonzero(A[0] == 1)[0]))
            others.append(int(np.flatnonzero(A[0] == -1)[0]))
        if len(labels) != 1 or not others:
            return None
        return labels.pop(), others


@dataclass
class Property:
    """A VNN-LIB property: counterexamples exist when some case has one."""

    path: str
    inputs: int
    outputs: int
    cases: list[Case]


@dataclass
class _Linear:
    """A linear term over one kind of variable: ``coefficients . v + constant``."""

    coefficients: dict[tuple[str, int], float]
    constant: float


class _Reader:
    def __init__(self, text: str, path: str):
        self.path = path
        self.lines = [m.start() for m in re.finditer(r"\n", text)]
        self.text = text

    def line(self, position: int) -> int:
        return bisect.bisect_left(self.lines, position) + 1

    def fail(self, position: int, message: str):
        raise VnnlibError(f"{self.path}, line {self.line(position)}: {message}")

    def expressions(self) -> list:
        """The top-level s-expressions, each a nested list whose atoms are ``(token, position)``."""
        stack: list[list] = [[]]
        opened: list[int] = []
        for match in _TOKEN.finditer(self.text):
            token = match.group()
            if token[0] == ";":
                continue
            if token == "(":
                stack.append([])
                opened.append(match.start())
            elif token == ")":
                if len(stack) == 1:
                    self.fail(match.start(), "')' closes nothing")
                done = stack.pop()
                done_at = opened.pop()
                stack[-1].append((done, done_at))
            else:
                stack[-1].append((token, match.start()))
        if len(stack) > 1:
            self.fail(opened[-1], "'(' is never closed")
        for item, position in stack[0]:
            if not isinstance(item, list):
                self.fail(position, f"expected '(' at the top level, found {item!r}")
        return stack[0]


def read_vnnlib(path: str | Path, inputs: int | None = None, outputs: int | None = None) -> Property:
    """Read the property at ``path`` (``.vnnlib`` or ``.vnnlib.gz``).  ``inputs`` and
    ``outputs``: the network's sizes, checked against the declared variables (default: as
    many as declared).  Raises :class:`VnnlibError` naming the file and line."""
    path = Path(path)
    return parse_vnnlib(_read_text(path, "property file", "VNN-LIB text"), str(path), inputs, outputs)


def _read_text(path: Path, kind: str, what: str) -> str:
    """The text of ``path``, gunzipped where it is gzip-compressed."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise VnnlibError(f"{path}: no such {kind}") from None
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise VnnlibError(f"{path}: cannot be read as {what} ({exc})") from None


def parse_vnnlib(text: str, path: str = "<property>", inputs: int | None = None, outputs: int | None = None) -> Property:
    """:func:`read_vnnlib` on the text of a file (``path`` names it in errors)."""
    reader = _Reader(text, path)
    declared: dict[str, set[int]] = {"X": set(), "Y": set()}
    where: dict[tuple[str, int], int] = {}
    assertions = []
    for expression, position in reader.expressions():
        head = expression[0][0] if expression and not isinstance(expression[0][0], list) else None
        if head == "declare-const":
            if len(expression) != 3 or any(isinstance(item, list) for item, _ in expression[1:]):
                reader.fail(position, "expected (declare-const NAME Real)")
            name, kind = expression[1][0], expression[2][0]
            match = _VARIABLE.match(name)
            if not match:
                reader.fail(position, f"variable {name!r}: expected X_<i> (an input) or Y_<j> (an output)")
            if kind != "Real":
                reader.fail(position, f"variable {name!r} is of sort {kind!r}; expected Real")
            declared[match.group(1)].add(int(match.group(2)))
            where[(match.group(1), int(match.group(2)))] = position
        elif head == "assert":
            if len(expression) != 2:
                reader.fail(position, "expected (assert TERM)")
            assertions.append(expression[1])
        else:
            reader.fail(position, f"expected declare-const or assert, found {head!r} (read: {SUBSET})")
    sizes = {}
    for kind, given, word in (("X", inputs, "inputs"), ("Y", outputs, "outputs")):
        found = declared[kind]
        count = max(found) + 1 if found else 0
        if found and found != set(range(count)):
            missing = min(set(range(count)) - found)
            raise VnnlibError(f"{path}: {kind}_{missing} is not declared, though {kind}_{count - 1} is")
        if given is not None and count > given:
            raise VnnlibError(
                f"{path}, line {reader.line(where[(kind, count - 1)])}: {kind}_{count - 1} is declared, "
                f"but the network has {given} {word} ({kind}_0 to {kind}_{given - 1})"
            )
        if given is not None and count and count < given:
            raise VnnlibError(f"{path}: {count} {word} declared, but the network has {given}")
        sizes[kind] = given if given is not None else count
    if not sizes["X"]:
        raise VnnlibError(f"{path}: no input X_i is declared")
    return _Builder(reader, declared, sizes).build(path, assertions)


class _Builder:
    """The assertions into disjunctive normal form: a list of terms, each a list of atoms
    ``(kind, data, position)`` with kind ``"bound"`` (input index, lower, upper) or
    ``"row"`` (output coefficients, bound)."""

    def __init__(self, reader: _Reader, declared, sizes):
        self.reader, self.declared, self.sizes = reader, declared, sizes

    def build(self, path: str, assertions: list) -> Property:
        n = self.sizes["X"]
        lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
        common_rows: list = []
        alternatives: list[list] = []  # each assertion with more than one term
        for term, position in assertions:
            terms = self.dnf(term, position)
            if len(terms) == 1:
                for atom in terms[0]:
                    if atom[0] == "bound":
                        self.tighten(lower, upper, atom)
                    else:
                        common_rows.append(atom)
            else:
                alternatives.append(terms)
        # the product of the alternatives: every choice of one term per assertion
        combined: list[list] = [[]]
        for terms in alternatives:
            if len(combined) * len(terms) > 100_000:
                raise VnnlibError(f"{path}: the property expands to more than 100,000 cases")
            combined = [chosen + term for chosen in combined for term in terms]
        cases: dict[bytes, Case] = {}
        for term in combined:
            low, high = lower.copy(), upper.copy()
            rows = list(common_rows)
            for atom in term:
                if atom[0] == "bound":
                    self.tighten(low, high, atom)
                else:
                    rows.append(atom)
            self.check_box(low, high, term)
            key = low.tobytes() + high.tobytes()
            case = cases.setdefault(key, Case(low, high))
            m = self.sizes["Y"]
            A = np.zeros((len(rows), m))
            b = np.zeros(len(rows))
            for r, (_, (coefficients, bound), _) in enumerate(rows):
                for j, value in coefficients.items():
                    A[r, j] = value
                b[r] = bound
            case.clauses.append((A, b))
        return Property(path, n, self.sizes["Y"], list(cases.values()))

    def tighten(self, lower, upper, atom):
        _, (i, low, high), _ = atom
        lower[i] = max(lower[i], low)
        upper[i] = min(upper[i], high)

    def check_box(self, lower, upper, term):
        unbounded = np.flatnonzero(~np.isfinite(lower) | ~np.isfinite(upper))
        if len(unbounded):
            i = int(unbounded[0])
            side = "lower" if not np.isfinite(lower[i]) else "upper"
            raise VnnlibError(
                f"{self.reader.path}: X_{i} has no {side} bound ({len(unbounded)} inputs are unbounded); "
                "every input needs (>= X_i c) and (<= X_i c)"
            )
        crossed = np.flatnonzero(lower > upper)
        if len(crossed):
            i = int(crossed[0])
            raise VnnlibError(
                f"{self.reader.path}: X_{i} has lower bound {lower[i]!r} above its upper bound {upper[i]!r}: the box is empty"
            )

    def dnf(self, term, position) -> list[list]:
        fail = self.reader.fail
        if not isinstance(term, list) or not term:
            fail(position, f"expected a constraint, found {term!r} (read: {SUBSET})")
        head = term[0][0]
        if isinstance(head, list):
            fail(position, f"expected an operator after '(' (read: {SUBSET})")
        if head == "and":
            result: list[list] = [[]]
            for part, at in term[1:]:
                result = [a + b for a in result for b in self.dnf(part, at)]
                if len(result) > 100_000:
                    fail(position, "the property expands to more than 100,000 cases")
            return result
        if head == "or":
            if len(term) < 2:
                fail(position, "(or) needs at least one term")
            return [t for part, at in term[1:] for t in self.dnf(part, at)]
        if head in ("<=", ">="):
            if len(term) != 3:
                fail(position, f"({head} A B) takes two terms, found {len(term) - 1}")
            left, right = self.linear(*term[1]), self.linear(*term[2])
            if head == ">=":
                left, right = right, left
            return [[self.atom(left, right, position)]]
        fail(position, f"{head!r} is not read here (read: {SUBSET})")

    def atom(self, left: _Linear, right: _Linear, position):
        """``left <= right`` as an input bound or an output row ``a . y <= b``."""
        coefficients = dict(left.coefficients)
        for key, value in right.coefficients.items():
            coefficients[key] = coefficients.get(key, 0.0) - value
        coefficients = {key: value for key, value in coefficients.items() if value != 0}
        bound = right.constant - left.constant
        kinds = {kind for kind, _ in coefficients}
        if not coefficients:
            self.reader.fail(position, "a constraint without variables (read: constraints on inputs or outputs)")
        if kinds == {"X"}:
            if len(coefficients) != 1:
                self.reader.fail(
                    position, f"a constraint joining several inputs; only bounds on single inputs are read ({SUBSET})"
                )
            (((_, i), c),) = coefficients.items()
            value = bound / c
            if not np.isfinite(value):
                self.reader.fail(position, f"the bound of X_{i} is {value!r}; expected a finite number")
            return ("bound", (i, value, np.inf) if c < 0 else (i, -np.inf, value), position)
        if kinds == {"Y"}:
            if not np.isfinite(bound) or not all(np.isfinite(v) for v in coefficients.values()):
                self.reader.fail(position, "an output constraint with a NaN or infinite number")
            return ("row", ({j: c for (_, j), c in coefficients.items()}, bound), position)
        self.reader.fail(position, f"a constraint mixing inputs and outputs is not read ({SUBSET})")

    def linear(self, term, position) -> _Linear:
        fail = self.reader.fail
        if not isinstance(term, list):
            match = _VARIABLE.match(term)
            if match:
                kind, index = match.group(1), int(match.group(2))
                if index not in self.declared[kind]:
                    fail(position, f"{term} is used but not declared")
                return _Linear({(kind, index): 1.0}, 0.0)
            try:
                value = float(term)
            except ValueError:
                fail(position, f"expected a number or a variable X_i / Y_j, found {term!r}")
            if not np.isfinite(value):
                fail(position, f"expected a finite number, found {term!r}")
            return _Linear({}, value)
        if not term or isinstance(term[0][0], list):
            fail(position, "expected an arithmetic operator after '('")
        head, parts = term[0][0], [self.linear(*p) for p in term[1:]]
        if head == "+" and parts:
            return _sum(parts, [1.0] * len(parts))
        if head == "-" and len(parts) == 1:
            return _sum(parts, [-1.0])
        if head == "-" and parts:
            return _sum(parts, [1.0] + [-1.0] * (len(parts) - 1))
        if head == "*" and parts:
            variable = [p for p in parts if p.coefficients]
            if len(variable) > 1:
                fail(position, "a product of variables is not linear")
            factor = float(np.prod([p.constant for p in parts if not p.coefficients]))
            if not variable:
                return _Linear({}, factor)
            return _sum(variable, [factor])
        fail(position, f"{head!r} is not read in a linear term (read: +, -, * by a number)")


def _sum(parts: list[_Linear], signs: list[float]) -> _Linear:
    coefficients: dict = {}
    constant = 0.0
    for part, sign in zip(parts, signs):
        constant += sign * part.constant
        for key, value in part.coefficients.items():
            coefficients[key] = coefficients.get(key, 0.0) + sign * value
    return _Linear(coefficients, constant)


def counterexample_text(inputs: np.ndarray, outputs: np.ndarray) -> str:
    """A counterexample in VNN-COMP's format: ``((X_0 v) ... (Y_0 v) ...)``, one per line,
    values written so that they read back exactly (float32 inputs as the network took them)."""
    lines = [f"(X_{i} {float(v) + 0.0!r})" for i, v in enumerate(np.asarray(inputs).reshape(-1))]  # no -0.0
    lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(outputs).reshape(-1))]
    return "(" + "\n ".join(lines) + ")\n"


def read_counterexample(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and outputs of a counterexample file in VNN-COMP's format (``sat`` on
    its first line optional; gzip-compressed read as it is)."""
    path = Path(path)
    text = _read_text(path, "counterexample file", "a counterexample")
    text = re.sub(r"^\s*(sat|unsat|unknown|timeout)\s*", "", text)
    reader = _Reader(text, str(path))
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for expression, position in reader.expressions():
        pairs = expression if expression and isinstance(expression[0][0], list) else [(expression, position)]
        for pair, at in pairs:
            if len(pair) != 2 or isinstance(pair[0][0], list) or isinstance(pair[1][0], list):
                reader.fail(at, "expected (X_i value) or (Y_j value)")
            match = _VARIABLE.match(pair[0][0])
            if not match:
                reader.fail(at, f"expected X_i or Y_j, found {pair[0][0]!r}")
            try:
                values[match.group(1)][int(match.group(2))] = float(pair[1][0])
            except ValueError:
                reader.fail(at, f"expected a number, found {pair[1][0]!r}")
    arrays = []
    for kind in ("X", "Y"):
        found = values[kind]
        if set(found) != set(range(len(found))):
            raise VnnlibError(f"{path}: the {kind} values are not numbered 0 to {len(found) - 1}")
        arrays.append(np.array([found[i] for i in range(len(found))]))
    return arrays[0], arrays[1]
