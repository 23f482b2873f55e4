"""Agent configuration: an ``Args`` dataclass, optional YAML presets, then command-line flags.

``--config ppo_hopper`` loads ``configs/ppo_hopper.yaml`` (or any YAML path); flags given on
the command line override it. Unknown keys and ill-typed values are refused by name.

``--help`` lists the options in groups: ``--config`` and the class's ``core_options``
first, then the agent's own options, then those of each base class that names a
``help_group`` (the plug-ins' options). Flags stay flat (``--wc-kappa``, not
``--plugins.wc-kappa``): the groups exist for the help text only.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import textwrap
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tyro
import yaml

from runners.base.errors import UsageError

ArgsT = TypeVar("ArgsT")
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs"


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


CONFIG_HELP = (
    "preset name (configs/<name>.yaml, e.g. ppo_hopper, dqn_cartpole) or a YAML file of options; "
    "flags given on the command line override it"
)


def field_docstrings(cls: type) -> dict[str, str]:
    """The string literal under each annotated field in ``cls``'s source, for every class of its MRO."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError, AttributeError):
            continue
        for statement, following in zip(body, body[1:]):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def option_groups(args_class: type) -> list[tuple[str, list[str]]]:
    """(group, field names) in help order: core, the agent's own, then each ``help_group`` base's."""
    names = [f.name for f in dataclasses.fields(args_class)]
    core = [name for name in getattr(args_class, "core_options", ()) if name in names]
    groups: dict[str, list[str]] = {"core": core, "algorithm": []}
    for name in names:
        if name in core:
            continue
        declaring = next(k for k in reversed(args_class.__mro__) if name in k.__dict__.get("__annotations__", {}))
        groups.setdefault(declaring.__dict__.get("help_group", "algorithm"), []).append(name)
    return [(key, fields) for key, fields in groups.items() if fields]


def _help_view(args_class: type, default: Any) -> type:
    """A dataclass of one nested dataclass per option group, with unprefixed flags, for tyro."""
    hints, docs = typing.get_type_hints(args_class), field_docstrings(args_class)
    groups = []
    for index, (name_of_group, names) in enumerate(option_groups(args_class)):
        specs = [
            (
                name,
                Annotated[hints[name], tyro.conf.arg(help=docs.get(name, ""))],
                dataclasses.field(default=getattr(default, name)),
            )
            for name in names
        ]
        if index == 0:
            specs.insert(
                0, ("config", Annotated[str | None, tyro.conf.arg(help=CONFIG_HELP)], dataclasses.field(default=None))
            )
        group = dataclasses.make_dataclass(name_of_group, specs)
        groups.append(
            (
                name_of_group,
                Annotated[group, tyro.conf.OmitArgPrefixes],
                dataclasses.field(
                    default_factory=lambda group=group, names=names: group(**{n: getattr(default, n) for n in names})
                ),
            )
        )
    return dataclasses.make_dataclass("Options", groups)


def parse_args(args_class: type[ArgsT], argv: list[str] | None, prog: str) -> ArgsT:
    """Defaults < ``--config`` preset < flags; ``--help`` lists every option with its docstring, in groups."""
    import sys

    config, rest = _split_config_flag(list(sys.argv[1:] if argv is None else argv))
    default = load_config_file(args_class, config) if config else args_class()
    view = tyro.cli(_help_view(args_class, default), args=rest, prog=prog, description=args_class.__doc__)
    values = {
        name: value for group in dataclasses.fields(view) for name, value in vars(getattr(view, group.name)).items()
    }
    values.pop("config", None)  # read above, before tyro
    return check_finite(args_class(**values))
