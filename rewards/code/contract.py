"""Static checks of a reward program, before it runs anywhere (the sandbox is the real defence).

The contract (also in the prompt, :data:`rewards.code.prompts.SIGNATURE`)::

    import numpy as np            # only numpy and math may be imported
    def compute_reward(obs, action, next_obs):
        ...                       # batched: (batch, *obs_shape), (batch, *action_shape)
        return reward, components # (batch,) floats, {name: (batch,) floats}

At the top level only imports, constant assignments, function definitions and a docstring are
allowed. Refused up front, each with its line: syntax errors, other imports, the builtins that
reach files, code or attributes by name (``open``, ``exec``, ``eval``, ``__import__``, ``getattr``,
...), any ``__dunder__`` attribute, and assignments to attributes of an imported module
(``np.sum = ...``: patching numpy). These checks give the language model precise feedback; they do
not stop a determined program (that is the sandbox's job, see :mod:`rewards.code.sandbox`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

ALLOWED_IMPORTS = ("numpy", "math")
FORBIDDEN_NAMES = frozenset(
    "open exec eval compile __import__ getattr setattr delattr globals locals vars dir input breakpoint "
    "exit quit help memoryview __builtins__ __loader__ __spec__".split()
)
ENTRY = "compute_reward"
ARGS = ("obs", "action", "next_obs")


@dataclass(frozen=True)
class Problem:
    """One violation of the contract: the line (1-based, or None) and what is wrong."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def check_source(source: str) -> list[Problem]:
    """All contract violations of ``source`` (empty when it may be run).

    Args:
        source: Python source of a reward program.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        return [Problem(exc.lineno, f"syntax error: {exc.msg}" + (f" in `{text}`" if text else ""))]
    problems: list[Problem] = []
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] not in ALLOWED_IMPORTS:
                    problems.append(
                        Problem(node.lineno, f"imports {alias.name!r}; only numpy and math may be imported")
                    )
                modules.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").partition(".")[0] not in ALLOWED_IMPORTS:
                problems.append(
                    Problem(node.lineno, f"imports from {node.module!r}; only numpy and math may be imported")
                )
            for alias in node.names:
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            problems.append(Problem(node.lineno, f"uses {node.id!r}, which reward code may not use"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr.endswith("__"):
            problems.append(Problem(node.lineno, f"accesses {node.attr!r}; dunder attributes are not allowed"))
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
