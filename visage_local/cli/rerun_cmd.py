"""``visage-local rerun``: repeat a run from the config.toml in its folder."""

from __future__ import annotations

from pathlib import Path

import click

from .config_file import CONFIG_TOML, command_of, read_config
from .options import GpuLayers


@click.command("rerun")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder of the repeated run [default: RUN_DIR-rerun].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print the repeated run's JSON document and nothing else.")  # fmt: skip
@click.option("--n-gpu-layers", type=GpuLayers(), default=None,
              help="Layers to offload to a GPU on this machine (N or auto) instead of the "
              "number the run recorded.")  # fmt: skip
def rerun_command(
    run_dir: Path, out_dir: Path | None, as_json: bool, n_gpu_layers: int | None
) -> None:
    """Repeat the run in RUN_DIR (a sweep, interpolate, check or screen folder) with the
    options its config.toml records, into a new folder."""
    path = run_dir / CONFIG_TOML
    if not path.is_file():
        raise click.UsageError(f"{run_dir}: no {CONFIG_TOML} (written by visage-local 0.2 on)")
    group = click.get_current_context().parent
    assert group is not None and isinstance(group.command, click.Group)
    name = command_of(path) or ""
    command = group.command.get_command(group, name)
    if command is None or name == "rerun":
        raise click.UsageError(f"{path}: no command to repeat (command = {name!r})")
    values = read_config(path, command)
    values["out_dir"] = out_dir or run_dir.with_name(run_dir.name + "-rerun")
    if as_json:
        values["as_json"] = True
    if n_gpu_layers is not None:
        values["n_gpu_layers"] = n_gpu_layers
    click.echo(f"rerun: visage-local {name} with {path} -> {values['out_dir']}", err=True)
    with command.make_context(name, [], parent=group, default_map=values) as ctx:
        command.invoke(ctx)
