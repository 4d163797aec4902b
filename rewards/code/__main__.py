"""``python -m rewards.code check --env ENV FILE.py``: the checks ``reward=code`` runs, on your file.

Exit status 0 when the program is accepted, 1 with the reason (and the offending line) when not,
2 on bad usage. ``ENV`` is an env config name (``experiments/conf/env/ENV.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def env_config(name: str) -> dict[str, Any]:
    """The env config ``experiments/conf/env/<name>.yaml``, interpolations resolved.

    Raises:
        ConfigError: Unknown name (the message lists the known ones).
    """
    from omegaconf import OmegaConf

    from experiments.cli import compose_script

    cfg = compose_script([f"env={name}"], "config", "--env")
    return OmegaConf.to_container(cfg.env, resolve=True)  # type: ignore[return-value]


def check_main(argv: list[str]) -> int:
    """Run ``check --env ENV FILE.py [--samples N] [--seed S]``: the checks ``reward=code`` runs, on a file.

    Args:
        argv: The arguments after ``check``.

    Returns:
        The exit status: 0 accepted, 1 rejected (the stage and reason are printed), 2 bad usage
        (no such file, unknown env).
    """
    parser = argparse.ArgumentParser(prog="python -m rewards.code check", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--env", required=True, help="env config name, e.g. cartpole, halfcheetah, minigrid-doorkey-5x5"
    )
    parser.add_argument("file", type=Path, help="the reward program (.py)")
    parser.add_argument("--samples", type=int, default=256, help="random-action transitions to test on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from envs.errors import ConfigError
    from rewards.code.contract import clean_text
    from rewards.code.validate import check_program, sample_transitions

    if not args.file.is_file():
        print(f"error: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        sample = sample_transitions(env_config(args.env), args.samples, args.seed)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = check_program(args.file.read_text(), sample, filename=args.file.name)
    if not result.ok:
        # the reason quotes the program (its errors, its prints): cleaned, and indented under the verdict
        reason = clean_text(result.message, 4000).replace("\n", "\n  | ")
        print(f"REJECTED at the {result.stage} check:\n  | {reason}")
        return 1
    corr = "undefined (a constant reward)" if result.pearson_true is None else f"{result.pearson_true:+.3f}"
    print(
        f"ACCEPTED {args.file} on {args.env}: components {result.components or '(none)'}, "
        f"{result.ms_per_batch:.2f} ms per 64-transition batch in the sandbox, "
        f"Pearson correlation with the env's reward on {args.samples} random transitions: {corr}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``python -m rewards.code`` entry point (module docstring).

    Args:
        argv: The command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (see :func:`check_main`); 2 when the first argument is not ``check``.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "check":
        print("usage: python -m rewards.code check --env ENV FILE.py", file=sys.stderr)
        return 2
    return check_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
