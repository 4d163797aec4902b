"""Command-line checks that turn bad input into one clear line and a non-zero exit.

Before Hydra starts (so that no run directory is made for a run that cannot start),
:func:`expand_shorthands` rewrites ``dataset=<id>`` into its config-group form, and
:func:`precheck` looks at ``sys.argv``:

* :func:`check_group_choices`: an unknown ``env=``, ``reward=``, ``agent=`` or ``preset=`` name
  is reported with the valid names (Hydra's own message for this is a page long);
* :func:`check_composes`: the config is composed as Hydra will compose it, and a composition
  error (an unknown key, bad override syntax) becomes one line;
* :func:`validate`: types and ranges of the runner's own settings on the composed config.

The runner validates again (sweeps skip the compose step: each job is checked when it starts).

Everything the user can get wrong raises :class:`envs.errors.ConfigError`; :func:`user_errors`
prints it as ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from envs.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
EXIT_USAGE = 2


def search_dirs(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> list[Path]:
    """The config directories a command line composes from.

    Args:
        argv: The command line's overrides (``key=value`` ...).
        conf_dir: The repository's config directory.

    Returns:
        ``conf_dir`` followed by the directories of any ``hydra.searchpath=[file://DIR,...]``
        (how configs that live outside the repository are added).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = [conf_dir]
    for arg in argv:
        if not arg.startswith("hydra.searchpath="):
            continue
        try:
            (override,) = OverridesParser.create().parse_overrides([arg])
            value = override.value()
        except Exception:  # Hydra reports syntax errors itself
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith("file://"):
                dirs.append(Path(item[len("file://") :]).expanduser().resolve())
    return dirs


def group_choices(group: str, conf_dir: Path = CONF_DIR, extra_dirs: Sequence[Path] = ()) -> list[str]:
    """The names selectable for a config group (``<dir>/<group>/*.yaml`` in every config directory)."""
    names: set[str] = set()
    for d in (conf_dir, *extra_dirs):
        names.update(p.stem for p in (d / group).glob("*.yaml") if not p.stem.startswith("_"))
    return sorted(names)


def is_group(name: str, dirs: Sequence[Path]) -> bool:
    """Whether ``name`` (``env``, ``reward/teacher``) is a config group: a folder of that name in one of ``dirs``."""
    return bool(name) and not name.startswith("hydra") and any((d / name).is_dir() for d in dirs)


def _override_values(arg: str) -> tuple[str, list[str]] | None:
    """``env=a,b`` -> ``("env", ["a", "b"])``; ``None`` for what is not a plain key/group override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except Exception:  # Hydra reports syntax errors itself
        return None
    if override.package is not None or override.is_delete():
        return None
    if override.is_sweep_override():
        return override.key_or_group, [str(v) for v in override.sweep_string_iterator()]
    value = override.value()
    return override.key_or_group, [] if value is None else [str(value)]


def _plural(group: str) -> str:
    """``env`` -> ``envs``, ``study`` -> ``studies``."""
    return group[:-1] + "ies" if group.endswith("y") and group[-2:-1] not in "aeiou" else group + "s"


def check_group_choices(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Check every config-group override of a command line against the config files that exist.

    Args:
        argv: The command line's overrides.
        conf_dir: The repository's config directory (search-path directories are added to it).

    Raises:
        ConfigError: An unknown name in a config-group override (``env=``, ``reward/teacher=``), or a
            nested group written with a dot (``reward.teacher=clip``, which Hydra would take as a plain string).
    """
    dirs = search_dirs(argv, conf_dir)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        parsed = _override_values(arg)
        if parsed is None:
            continue
        key, values = parsed
        group = key.replace(".", "/")
        if not is_group(group, dirs):
            continue
        valid = group_choices(group, conf_dir, dirs[1:])
        if "." in key:
            if not values or any(v not in valid for v in values):
                continue  # a plain value of another config that has a key of that name (reward.model=ViT-B-32)
            raise ConfigError(
                f"{key} is a config group: write {group}={','.join(values)} (a slash, not a dot); "
                f"choices: {', '.join(valid)} (see experiments/conf/{group}/)"
            )
        for value in values:
            if value not in valid and value != "null":
                raise ConfigError(
                    f"unknown {group} {value!r}; valid {_plural(group)}: {', '.join(valid)} (see experiments/conf/{group}/)"
                )


def _compose_overrides(argv: Sequence[str]) -> list[str] | None:
    """The overrides to compose a single run with, or ``None`` for sweeps and Hydra's own flags."""
    if any(a.startswith("-") for a in argv):
        return None  # -m / --multirun sweeps, --cfg, --help, --info: Hydra handles these
    return [
        a for a in argv if a.startswith("hydra.searchpath=") or not a.lstrip("+~").startswith(("hydra.", "hydra/"))
    ]


def check_composes(argv: Sequence[str], conf_dir: Path = CONF_DIR, config_name: str = "config") -> Any:
    """Compose the config of a single run; raise :class:`ConfigError` if Hydra cannot.

    ``config_name`` selects the entry point's primary config (``conf/<config_name>.yaml``).

    Returns:
        The composed config, or ``None`` for sweeps and flag invocations (not composed here).
    """
    overrides = _compose_overrides(argv)
    if overrides is None:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, OverrideParseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except (ConfigCompositionException, OverrideParseException) as exc:
        lines = str(exc).splitlines()
        message = lines[0].rstrip(".")
        if exc.__cause__ is not None:
            message += ": " + str(exc.__cause__).splitlines()[0]
        hint = next((line for line in lines if line.startswith("To append")), None)
        if hint:
            message += f" ({hint[0].lower()}{hint[1:]}; see experiments/conf/ for the keys)"
        present = re.search(r"Could not append to config\. An item is already at '([^']+)'", message)
        if present:
            message += f": it is set already, so give {present[1]}=... without the '+' (or '++' to set it either way)"
        raise ConfigError(message) from None


def compose_script(argv: Sequence[str], config_name: str, script: str) -> Any:
    """The config of a single-invocation entry point (``reward_eval.py``, ...).

    Shorthands are expanded (:func:`expand_shorthands`), group names checked, then the config composed.

    Raises:
        ConfigError: An unknown group choice, a composition error, or a sweep / flag invocation.
    """
    argv = expand_shorthands(argv)
    check_group_choices(argv)
    cfg = check_composes(argv, config_name=config_name)
    if cfg is None:
        raise ConfigError(f"{script} takes key=value overrides only (no -m sweeps or flags)")
    return cfg


def expand_shorthands(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """``dataset=<id>`` -> ``dataset=minari dataset.dataset_id=<id>``: a dataset id is not a config name.

    ``dataset`` is a config group (``conf/dataset/``: how data is loaded); the id of the data is a
    value inside it. Other arguments, and ``dataset=<a config name>`` or ``dataset=null``, pass unchanged.
    """
    out: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "dataset" and value not in ("", "null", *group_choices("dataset", conf_dir)):
            out += ["dataset=minari", f"dataset.dataset_id={value}"]
        else:
            out.append(arg)
    return out


def dataset_source(cfg: Any, script: str) -> tuple[str, str | None]:
    """``(dataset id, dataset root)`` of a script's ``dataset=<id>`` (the ``conf/dataset`` node).

    Raises:
        ConfigError: No dataset given.
    """
    node = cfg.get("dataset")
    if node is None:
        raise ConfigError(f"{script} needs dataset=<id>, e.g. dataset=local/pendulum/random-v0")
    root = node.get("root")
    return str(node.dataset_id), (None if root is None else str(root))


def config_dict(node: Any) -> dict[str, Any]:
    """A composed config node as a plain ``dict`` (``OmegaConf.to_container``, interpolations resolved).

    Args:
        node: A mapping node of a composed config (``cfg.env``, ``cfg.reward`` ...).

    Returns:
        The node's settings; nested nodes become plain dicts and lists.

    Raises:
        ConfigError: The node is a list or a plain value, not a mapping.
        ValueError: ``node`` is not an OmegaConf config at all (from ``OmegaConf.to_container``).
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(node, resolve=True)
    if not isinstance(container, dict):
        raise ConfigError(f"expected a mapping of settings, got {type(container).__name__}: {container!r}")
    return cast("dict[str, Any]", container)  # the keys of a composed config's mapping are strings


def precheck(argv: Sequence[str]) -> None:
    """All checks that can run before Hydra creates a run directory (module docstring)."""
    check_group_choices(argv)
    cfg = check_composes(argv)
    if cfg is not None and not cfg.resume:
        validate(cfg)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print :class:`ConfigError` as one line on stderr and exit with status 2."""
    try:
        yield
    except ConfigError as exc:
        if os.environ.get("REWARDLAB_TRACEBACK"):
            raise
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_int(cfg: Any, key: str, minimum: int, allow_none: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``cfg.<key>`` (dotted) is an integer >= ``minimum`` (or null if allowed)."""
    value = cfg
    for part in key.split("."):
        value = value.get(part) if hasattr(value, "get") else None
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or null" if allow_none else ""
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}{extra}")


def validate(cfg: Any) -> None:
    """Check the runner's settings on a composed config (types and ranges).

    Raises:
        ConfigError: The first problem found.
    """
    from omegaconf import OmegaConf

    check_int(cfg, "steps", 1)
    check_int(cfg, "seed", 0)
    check_int(cfg, "torch_threads", 1)
    check_int(cfg, "eval.every", 1, allow_none=True)
    check_int(cfg, "eval.episodes", 1)
    check_int(cfg, "eval.final_episodes", 1)
    check_int(cfg, "eval.n_envs", 1)
    check_int(cfg, "checkpoint.every", 1, allow_none=True)
    check_int(cfg, "checkpoint.keep", 1)
    check_int(cfg, "video.final_episodes", 0)
    check_int(cfg, "video.every", 1, allow_none=True)
    check_int(cfg, "video.max_frames", 1)
    if not isinstance(cfg.device, str) or not _DEVICE.match(cfg.device):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu, cuda or cuda:N")
    if cfg.progress not in ("auto", True, False):
        raise ConfigError(f"progress={cfg.progress!r} must be auto, true or false")
    fps = cfg.video.fps
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
        raise ConfigError(f"video.fps={fps!r} must be a positive number or null")
    if cfg.reward.get("name") == "preference":
        import envs  # noqa: F401  (registers the env cards)
        from envs.cards import cards

        if any(c.id == cfg.env.get("id") and "text" in c.features for c in cards()):
            from rewards.preference.text import check_text_config

            check_text_config(cfg.reward)
    dataset = cfg.get("dataset")
    if dataset is not None and OmegaConf.is_missing(dataset, "dataset_id"):
        raise ConfigError("dataset= needs the dataset's id: dataset=<id>, e.g. dataset=local/pendulum/random-v0")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; refuse a GPU that is not there."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but torch sees no CUDA GPU; use device=cpu or device=auto")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps but torch sees no Apple GPU; use device=cpu or device=auto")
    return device


def _swept_suffix(override_dirname: str) -> str:
    """A sweep job's folder-name suffix from its settings, e.g. ``_reward.scale=-1_steps=300``.

    Env, reward, agent and seed are in the name already and run-time options say nothing about the
    run; ``/`` in values is replaced and the suffix kept to 120 characters.
    """
    skip = ("env=", "reward=", "agent=", "seed=", "hydra", "video.", "progress=", "checkpoint.", "device=", "torch_threads=")
    parts = [p for p in override_dirname.split(",") if p and not p.startswith(skip)]
    text = "_".join(parts).replace("/", "-").replace(" ", "")
    return ("_" + text)[:120] if text else ""


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use (``rewardlab.swept``: sweep folders named by their settings)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rewardlab.swept"):
        OmegaConf.register_new_resolver("rewardlab.swept", _swept_suffix)
