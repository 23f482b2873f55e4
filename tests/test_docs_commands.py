"""Every command in README.md and docs/ parses as written: its options exist and take the values
given, its presets, sweep specs and env ids are known, and the agent's own checks accept it. (The
quickstart and the demo sweeps also run, at a small budget: tests/test_first_hour.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from runners.base.config import parse_args
from runners.cli import figures_parser, sweep_parser
from runners.plots import compare_csv_path
from runners.registry import args_class, check_env_id, check_run_options
from runners.sweep import choose_runs, load_spec

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def fenced_blocks(text: str, tags: tuple[str, ...]) -> list[str]:
    """The fenced blocks whose tag is one of ``tags`` ("" for untagged)."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line[3:].strip() in tags else False
            else:
                if current is not False:
                    blocks.append("\n".join(current))
                current = None
        elif current:
            current.append(line)
        elif current == []:
            current = [line]
    return blocks


def shell_blocks(text: str) -> list[str]:
    return fenced_blocks(text, ("", "bash", "sh", "shell"))


def documented_specs() -> dict[str, str]:
    """The sweep specs the pages write out (```yaml blocks with a ``name``), by the file name the
    commands give them: ``<name>.yaml``."""
    specs = {}
    for page in PAGES:
        for block in fenced_blocks(page.read_text(), ("yaml",)):
            if match := re.search(r"^name: (\S+)$", block, re.MULTILINE):
                specs[f"{match.group(1)}.yaml"] = block + "\n"
    return specs


def expand(line: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from the block's own assignments; any other ``${...}`` form
    (``${when#*:}``) stands for a number."""
    line = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), line)
    line = re.sub(r"\$\{[^}]*\}", "1", line)
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), line)


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: words split at ``&&``, ``;`` and ``|``, comments dropped,
    a loop's ``do`` left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, words = [], []
    for token in lexer:
        if token in ("&&", ";", "|", "||"):
            commands.append(words)
            words = []
        elif not (token in ("do", "then") and not words):
            words.append(token)
    return [*commands, words]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after ``clipzoo``) for every ``clipzoo`` or ``python agents/<agent>.py`` command
    in a shell block, continuation lines joined, variables of the block expanded."""
    found = []
    for page in PAGES:
        for block in shell_blocks(page.read_text()):
            variables: dict[str, str] = {}
            for number, line in enumerate(re.sub(r"\\\n\s*", " ", block).splitlines(), 1):
                line = line.strip()
                if match := re.fullmatch(r"(\w+)=(\"[^\"]*\"|\S*)", line):
                    variables[match.group(1)] = expand(match.group(2).strip('"'), variables)
                    continue
                if match := re.match(r"for (\w+) in (\S+)", line):
                    variables[match.group(1)] = match.group(2)
                for words in shell_commands(expand(line, variables)):
                    if words[:1] in (["clipzoo"], [".venv/bin/clipzoo"]):
                        found.append((f"{page.name}: {' '.join(words)}", words[1:]))
                    elif words[:2] == ["python", "agents/ppo_continuous.py"]:
                        found.append((f"{page.name}: {' '.join(words)}", ["train", "ppo", *words[2:]]))
    return found


COMMANDS = documented_commands()


def documented_comparisons() -> set[str]:
    """The comparisons CSVs the documented ``table --compare ... --csv FILE`` commands write (FILE_compare.csv)."""
    written = set()
    for _, argv in COMMANDS:
        if argv[:1] == ["table"]:
            args = figures_parser("table").parse_args(argv[1:])
            if args.compare and args.csv:
                written.add(str(compare_csv_path(args.csv)))
    return written


DOCUMENTED_COMPARISONS = documented_comparisons()


def test_the_docs_hold_the_commands_the_readme_promises():
    subcommands = {argv[0] if argv[:2] != ["sweep", "status"] else "sweep status" for _, argv in COMMANDS}
    assert {"train", "sweep", "sweep status", "plot", "table", "holm", "heatmap"} <= subcommands, subcommands
    assert len(COMMANDS) >= 50


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_every_documented_command_parses_with_known_options_presets_and_specs(argv, tmp_path):
    unexpanded = [word for word in argv if "$" in word]
    assert not unexpanded, f"variables the block does not define: {unexpanded}"
    command, rest = argv[0], argv[1:]
    if command == "train":
        agent, options = rest[0], rest[1:]
        if "--help" in options:
            with pytest.raises(SystemExit) as exit_info:
                parse_args(args_class(agent), options, prog=f"clipzoo train {agent}")
            assert exit_info.value.code == 0
            return
        args = parse_args(args_class(agent), options, prog=f"clipzoo train {agent}")
        check_run_options(agent, args)
        check_env_id(args.env_id)
    elif command == "sweep" and rest[:1] == ["status"]:
        sweep_parser(status=True).parse_args(rest[1:])
    elif command == "sweep":
        args = sweep_parser().parse_args(rest)
        for name in args.specs:
            spec = REPO / name
            if not spec.exists():  # a spec the page writes out for the reader to save
                assert name in documented_specs(), f"{name} is neither in the repository nor on a page"
                spec = tmp_path / name
                spec.write_text(documented_specs()[name])
            choose_runs(load_spec(spec, tmp_path / "sweep" / spec.stem), args.env, args.variant)
    elif command == "holm":
        args = figures_parser(command).parse_args(rest)
        unwritten = set(args.comparisons) - DOCUMENTED_COMPARISONS
        assert not unwritten, f"no documented `table --compare ... --csv` command writes {sorted(unwritten)}"
    else:
        args = figures_parser(command).parse_args(rest)
        if command == "table" and args.compare:
            assert all(a != b for a, b in args.compare)
