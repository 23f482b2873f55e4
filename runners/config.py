"""Agent configuration: an ``Args`` dataclass, optional YAML presets, then command-line flags.

``--config hopper`` loads ``configs/hopper.yaml`` (or any YAML path); flags given on
the command line override it. Unknown keys and ill-typed values are refused by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tyro
import yaml

from runners.errors import UsageError

ArgsT = TypeVar("ArgsT")
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UsageError(f"config file {name_or_path} does not exist")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(name_or_path, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; presets: {', '.join(names)}"
        raise UsageError(f"unknown config preset {name_or_path!r}{hint}")
    return preset


def _type_matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    return isinstance(value, annotation)


def apply_overrides(args_class: type[ArgsT], overrides: dict[str, Any], source: str) -> ArgsT:
    """An ``args_class`` instance with ``overrides`` applied, every key and type checked."""
    hints = typing.get_type_hints(args_class)
    fields = {f.name for f in dataclasses.fields(args_class)}
    values = {}
    for key, value in overrides.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown config key {key!r} in {source}{hint}")
        if not _type_matches(value, hints[name]):
            raise UsageError(f"config key {key!r} in {source} must be {hints[name]}, got {value!r}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return check_finite(args_class(**values), source)


def check_finite(args: ArgsT, source: str = "the command line") -> ArgsT:
    """Refuse nan and inf in every number option: no option of any agent means anything with them."""
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{field.name.replace('_', '-')} must be a finite number, got {value} (from {source})")
    return args


def load_config_file(args_class: type[ArgsT], name_or_path: str) -> ArgsT:
    path = preset_path(name_or_path)
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise UsageError(f"{path} must hold a mapping of option names to values")
    return apply_overrides(args_class, content, str(path))


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    config, rest, index = None, [], 0
    while index < len(argv):
        token = argv[index]
        if token == "--config":
            if index + 1 >= len(argv):
                raise UsageError("--config needs a preset name or a YAML file")
            config, index = argv[index + 1], index + 2
            continue
        if token.startswith("--config="):
            config = token.split("=", 1)[1]
        else:
            rest.append(token)
        index += 1
    return config, rest


def parse_args(args_class: type[ArgsT], argv: list[str] | None, prog: str) -> ArgsT:
    """Defaults < ``--config`` preset < flags; ``--help`` lists every option with its docstring."""
    import sys

    config, rest = _split_config_flag(list(sys.argv[1:] if argv is None else argv))
    default = load_config_file(args_class, config) if config else args_class()
    return check_finite(tyro.cli(args_class, args=rest, default=default, prog=prog, description=args_class.__doc__))
