"""Static checks of a reward program, before it runs anywhere (the sandbox is the real defence).

The contract (also in the prompt, :data:`rewards.code.prompts.SIGNATURE`)::

    import numpy as np            # only numpy (numpy.linalg, numpy.fft, numpy.random) and math
    def compute_reward(obs, action, next_obs):
        ...                       # batched: (batch, *obs_shape), (batch, *action_shape)
        return reward, components # (batch,) floats, {name: (batch,) floats}

At the top level only imports, constant assignments, function definitions and a docstring are
allowed. Refused up front, each with its line: syntax errors; imports of anything but the named
public modules (:data:`ALLOWED_MODULES`; ``numpy._core...`` and every other private or further
module included); ``from M import name`` unless ``name`` is public and numpy's (or math's) own
object (:func:`numpy_own`); star imports; the builtins that reach files, code or attributes by
name (``open``, ``exec``, ``eval``, ``__import__``, ``getattr``, ...); private and dunder
attributes (``x._core``, ``x.__class__``) and attribute names that lead out of numpy
(``ctypes``, ``os``, ``sys``, ...); ``np.<name>`` chains that reach anything but numpy's own
objects (``np.lib``, ``np.ctypeslib``, ``np.testing``, ...); a module used as a value
(``xp = np``, ``f(np)``) or its name rebound; and assignments to attributes of an imported module
(``np.sum = ...``: patching numpy). These checks give the language model precise feedback; they
do not stop a determined program (that is the sandbox's kernel layers' job, see
:mod:`rewards.code.sandbox`). :func:`clean_text` makes a program's text safe to print.
"""

from __future__ import annotations

import ast
import math
import re
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

ALLOWED_MODULES = ("numpy", "numpy.linalg", "numpy.fft", "numpy.random", "math")
FORBIDDEN_NAMES = frozenset(
    "open exec eval compile __import__ getattr setattr delattr globals locals vars dir input breakpoint "
    "exit quit help memoryview __builtins__ __loader__ __spec__".split()
)
# attribute names that lead out of numpy (on any object: arr.ctypes, rng.bit_generator.ctypes, ...)
# or write files (numpy's own, but the sandbox refuses files anyway: a clearer message up front)
FORBIDDEN_ATTRIBUTES = frozenset(
    "ctypes ctypeslib cffi os sys builtins posix subprocess importlib gc inspect tofile dump".split()
)
NUMPY_FILE_FUNCTIONS = frozenset(
    "load save savez savez_compressed loadtxt savetxt genfromtxt fromfile fromregex memmap info show_config "
    "show_runtime get_include test".split()
)
# the builtins the worker gives a program (rewards/code/_worker.py keeps the same list; a test checks)
SAFE_BUILTINS = (
    "abs all any bool dict divmod enumerate filter float frozenset int isinstance len list map max min "
    "print range reversed round set slice sorted str sum tuple zip ArithmeticError AssertionError "
    "Exception IndexError KeyError TypeError ValueError ZeroDivisionError FloatingPointError True False None"
).split()
ENTRY = "compute_reward"
ARGS = ("obs", "action", "next_obs")
_MODULES: dict[str, types.ModuleType] = {"numpy": np, "numpy.linalg": np.linalg, "numpy.fft": np.fft}
_MODULES |= {"numpy.random": np.random, "math": math}
_UNKNOWN = object()  # an attribute chain the static check cannot follow (instances, call results)


@dataclass(frozen=True)
class Problem:
    """One violation of the contract: the line (1-based, or None) and what is wrong."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


_UNSAFE = re.compile(r"[^\t\n\x20-\x7e]")


def clean_text(text: str, limit: int = 2000) -> str:
    r"""Untrusted text (a program's error, its prints, a model's answer) made safe to show or send on.

    Control and format characters (terminal escape codes, carriage returns, bidirectional
    overrides, zero-width characters, ...) are written out as ``\x1b``-style escapes, so they
    can neither rewrite a terminal nor hide text; printable characters, newlines and tabs stay.

    Args:
        text: The text.
        limit: Characters kept (about; escapes count as written); the rest is cut, and the cut said.

    Returns:
        The cleaned text.
    """
    text = str(text)
    cut = max(0, len(text) - limit)
    out = _UNSAFE.sub(lambda m: m[0] if m[0].isprintable() else m[0].encode("unicode_escape").decode(), text[:limit])
    if len(out) > limit:
        cut += 1
        out = out[:limit]
    return f"{out} [... {cut} characters cut]" if cut else out


def numpy_own(value: Any) -> bool:
    """Whether ``value`` is one a reward program may name.

    It may when ``value`` is an allowed module, numpy's or math's own function, class or constant,
    or a plain number; other modules (``numpy.lib``, ``os``) and foreign objects are refused.
    """
    if isinstance(value, types.ModuleType):
        return any(value is m for m in _MODULES.values())
    owner = getattr(value, "__module__", None)
    return type(value) in (int, float, complex, bool, type(None)) or (
        isinstance(owner, str) and owner.partition(".")[0] in ("numpy", "math")
    )


def _member(module: types.ModuleType, name: str) -> tuple[Any, str | None]:
    """``module.name`` when a program may use it, else (None, why not). Never imports anything."""
    where = module.__name__
    if name.startswith("_"):
        return None, f"{where}.{name} is private"
    if name not in vars(module):  # numpy's lazily loaded modules (testing, ctypeslib, ...) included
        return None, f"{where} has no public name {name!r} a reward program may use"
    value = vars(module)[name]
    if where.startswith("numpy") and name in NUMPY_FILE_FUNCTIONS:
        return None, f"{where}.{name} reads or writes files, which reward code may not do"
    if not numpy_own(value):
        kind = "the module " + value.__name__ if isinstance(value, types.ModuleType) else type(value).__name__
        return None, f"{where}.{name} is {kind}, not one of numpy's functions, types or numbers reward code may use"
    return value, None


def _is_base(node: ast.AST, parent: ast.AST | None) -> bool:
    """Whether ``node`` is the ``x`` of an ``x.name`` attribute access."""
    return isinstance(parent, ast.Attribute) and parent.value is node


class _Checker:
    """One program's import bindings and the problems found while walking it."""

    def __init__(self, tree: ast.Module) -> None:
        self.problems: list[Problem] = []
        self.bound: dict[str, Any] = {}  # name -> module or numpy object bound by an import
        self.parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.resolved: dict[ast.AST, Any] = {}

    def add(self, node: ast.AST, message: str) -> None:
        self.problems.append(Problem(getattr(node, "lineno", None), message))

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        allowed = ", ".join(ALLOWED_MODULES[:-1]) + " and " + ALLOWED_MODULES[-1]
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in _MODULES:
                    self.add(node, f"imports {alias.name!r}; only {allowed} may be imported")
                elif alias.asname:
                    self.bound[alias.asname] = _MODULES[alias.name]
                else:
                    self.bound[alias.name.partition(".")[0]] = _MODULES[alias.name.partition(".")[0]]
            return
        module = _MODULES.get(node.module or "") if not node.level else None
        if module is None:
            self.add(node, f"imports from {node.module!r}; only {allowed} may be imported")
            return
        for alias in node.names:
            if alias.name == "*":
                self.add(node, f"from {node.module} import *: import the names you use one by one")
                continue
            value, why = _member(module, alias.name)
            if why:
                self.add(node, f"imports {alias.name!r} from {node.module}: {why}")
            else:
                self.bound[alias.asname or alias.name] = value

    def resolve(self, node: ast.expr) -> Any:
        """The object an import-rooted name chain (``np.random.default_rng``) stands for, checking each step."""
        if node in self.resolved:
            return self.resolved[node]
        value: Any = _UNKNOWN
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            value = self.bound.get(node.id, _UNKNOWN)
        elif isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if isinstance(base, types.ModuleType) and not node.attr.startswith("_"):
                value, why = _member(base, node.attr)
                if why:
                    self.add(node, f"uses {ast.unparse(node)}: {why}")
                    value = _UNKNOWN
        self.resolved[node] = value
        return value

    def names(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id in FORBIDDEN_NAMES:
                self.add(node, f"uses {node.id!r}, which reward code may not use")
            module = isinstance(self.bound.get(node.id), types.ModuleType)
            if module and not isinstance(node.ctx, ast.Load):
                self.add(node, f"rebinds {node.id!r}, the name of an imported module")
            elif module and not _is_base(node, self.parents.get(node)):
                self.add(node, f"uses the module {node.id!r} as a value; use its functions ({node.id}.name) only")
        elif isinstance(node, (ast.arg, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.ExceptHandler)):
            name = node.arg if isinstance(node, ast.arg) else node.name
            if isinstance(self.bound.get(name or ""), types.ModuleType):
                self.add(node, f"rebinds {name!r}, the name of an imported module")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                self.add(node, f"accesses {node.attr!r}; dunder attributes are not allowed")
            elif node.attr.startswith("_"):
                self.add(node, f"accesses {node.attr!r}; private attributes (a leading '_') are not allowed")
            elif node.attr in FORBIDDEN_ATTRIBUTES:
                self.add(node, f"accesses {node.attr!r}, which leads out of numpy; reward code may not use it")
            self.resolve(node)


def check_source(source: str) -> list[Problem]:
    """All contract violations of ``source`` (empty when it may be run).

    Args:
        source: Python source of a reward program.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        text = clean_text((exc.text or "").strip(), 200)
        return [Problem(exc.lineno, f"syntax error: {exc.msg}" + (f" in `{text}`" if text else ""))]
    checker = _Checker(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            checker.imports(node)
    for node in ast.walk(tree):
        checker.names(node)
    problems = checker.problems
    modules = {name for name, value in checker.bound.items() if isinstance(value, types.ModuleType)}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute):
                    base = sub.value
                    while isinstance(base, ast.Attribute):
                        base = base.value
                    if isinstance(base, ast.Name) and base.id in modules:
                        problems.append(
                            Problem(node.lineno, f"assigns to {base.id}.{sub.attr}: patching modules is not allowed")
                        )
    problems += _check_top_level(tree)
    return sorted(set(problems), key=lambda p: (p.line or 0, p.message))


def _check_top_level(tree: ast.Module) -> list[Problem]:
    problems: list[Problem] = []
    entry = None
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)):
            if isinstance(node, ast.FunctionDef) and node.name == ENTRY:
                entry = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            pass
        elif i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            pass  # module docstring
        else:
            kind = type(node).__name__.lower()
            problems.append(
                Problem(
                    node.lineno,
                    f"top-level {kind} statement; only imports, constants and function definitions may be at the top level",
                )
            )
    if entry is None:
        problems.append(Problem(None, f"no top-level function {ENTRY}(obs, action, next_obs)"))
        return problems
    args = entry.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    required = len(positional) - len(args.defaults)
    if required > 3 or (len(positional) < 3 and args.vararg is None) or (args.kwonlyargs and None in args.kw_defaults):
        problems.append(
            Problem(entry.lineno, f"{ENTRY} must take (obs, action, next_obs); it takes ({', '.join(positional)})")
        )
    if entry.decorator_list:
        problems.append(Problem(entry.lineno, f"{ENTRY} may not be decorated"))
    return problems


def feedback(problems: list[Problem]) -> str:
    """The problems as text for the next model call (one per line)."""
    return "\n".join(f"- {p}" for p in problems)
