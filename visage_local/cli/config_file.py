"""Config files: ``--config FILE.toml`` supplies a command's options, and every run writes the
options it ran with to ``config.toml`` in its folder (``rerun`` repeats a run from it).

A config file is flat TOML: one key per option, named as on the command line without the
dashes (``max-new-tokens`` or ``max_new_tokens``), arguments by their name (``model``,
``models``, ``base``, ``finetune``); repeatable options take arrays, flags ``true`` or
``false``. The options given on the command line override the file. ``command`` names
the command the file is for; the file is refused by another command.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click

from visage_local.errors import ConfigError
from visage_local.files import atomic_write_text
from visage_local.record import OPTIONS_FILE

CONFIG_TOML = OPTIONS_FILE
# What a run's config.toml leaves out: how the result is shown, not what is run.
NOT_RECORDED = ("config", "as_json", "overwrite")


def _key(param: click.Parameter) -> str:
    """A parameter's key in a config file: its longest option name without dashes, or an
    argument's name."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len).lstrip("-")
    return param.name or ""


def _load(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    if path is None:
        return
    try:
        values = read_config(path, ctx.command)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--config") from e
    ctx.default_map = {**(ctx.default_map or {}), **values}


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def command_of(path: Path) -> str | None:
    """The command a config file is for (None when it does not say)."""
    command = _read(path).get("command")
    return None if command is None else str(command)


def read_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The options of ``path`` for ``command``, by parameter name; ConfigError (one line)
    for a file that cannot be read, another command's file or an unknown key."""
    data = _read(path)
    written_for = data.pop("command", command.name)
    if written_for != command.name:
        raise ConfigError(f"{path} is for '{written_for}', not '{command.name}'")
    names = {
        key: p.name
        for p in command.params
        if p.name not in NOT_RECORDED
        for key in (_key(p), _key(p).replace("-", "_"))
    }
    unknown = sorted(k for k in data if k not in names)
    if unknown:
        known = sorted(_key(p) for p in command.params if p.name not in NOT_RECORDED)
        raise ConfigError(
            f"{path}: unknown option {unknown[0]!r} for '{command.name}' "
            f"(known: {', '.join(known)})"
        )
    return {names[k]: v for k, v in data.items()}


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_load,
    help="A TOML file of this command's options (keys as the option names, e.g. "
    "max-new-tokens = 64); options on the command line override it. A run's own "
    "config.toml is one.",
)


def write_config(
    folder: Path, command: click.Command, values: dict[str, Any], typed: str | None = None
) -> Path:
    """Write ``values`` (parameter name -> resolved value) as ``folder/config.toml``, keyed
    as a config file is; None values and NOT_RECORDED are left out. ``typed``: the model as
    the user named it (a store spec), kept as a comment: the run is of the file it named."""
    lines = [
        "# The options this run was made with: `visage-local rerun FOLDER` repeats it, and",
        f"# `visage-local {command.name} --config {CONFIG_TOML}` starts from them.",
        *([f"# The model as typed: {typed} (this run is of the file below)"] if typed else []),
        f"command = {_toml(command.name)}",
    ]
    for param in command.params:
        value = values.get(param.name or "")
        if param.name in NOT_RECORDED or value is None:
            continue
        lines.append(f"{_key(param)} = {_toml(_absolute(value))}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what rerun reads back must parse
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_TOML
    atomic_write_text(path, text)
    return path


# Option values that name a file after a prefix: a system prompt's @FILE, a judge's keyword:FILE.
FILE_PREFIXES = ("@", "keyword:")


def _absolute(value: Any) -> Any:
    """``value`` with every relative path to an existing file made absolute (also after a
    FILE_PREFIXES prefix, and in lists), so that ``rerun`` works from any folder."""
    if isinstance(value, list | tuple):
        return [_absolute(v) for v in value]
    if not isinstance(value, str | Path):
        return value
    text = str(value)
    prefix = next((p for p in FILE_PREFIXES if text.startswith(p)), "")
    path = Path(text[len(prefix) :])
    if text and not path.is_absolute() and path.is_file():
        return prefix + str(path.resolve())
    return value


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string (the same escapes)
