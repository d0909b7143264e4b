"""The ``visage-local`` command group: thin click commands over the library."""

from __future__ import annotations

import errno
import os
import sys
import traceback

import click

from visage_local import __version__
from visage_local.analysis.verdict import MEANINGS
from visage_local.engine.llama import show_llama_logs
from visage_local.errors import VisageError

from .check_cmd import check_command
from .compare_cmd import compare_command
from .inspect_cmd import inspect_command
from .interpolate_cmd import interpolate_command
from .judge_cmd import judge_agreement_command, rejudge_command
from .ladder_cmd import ladder_command
from .merge_cmd import merge_command
from .models_cmd import fetch_command, models_command
from .perturb_cmd import perturb_command
from .report_cmd import report_command
from .rerun_cmd import rerun_command
from .screen_cmd import screen_command
from .sweep_cmd import sweep_command


class _Group(click.Group):
    """Turns the library's errors into one line on stderr and an exit code, not a traceback."""

    def invoke(self, ctx: click.Context):
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except VisageError as e:
            _fail(str(e), e.exit_code, debug)
        except OSError as e:
            if e.errno == errno.EPIPE:  # the reader went away (`| head`): stop quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(1)
            if e.errno == errno.ENOSPC:
                _fail(
                    "the disk is full; free some space and run the same command to resume", 1, debug
                )
            _fail(f"{e.filename or ''}: {e.strerror or e}", 1, debug)
        except KeyboardInterrupt:  # a second Ctrl-C
            _fail(
                "stopped (Ctrl-C): nothing half-written is left; a sweep, check or screen "
                "resumes with the same command",
                INTERRUPTED,
                debug,
            )


# The exit code of a run the user stopped (Ctrl-C): said as what happened, not as an error.
INTERRUPTED = 130


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(message if code == INTERRUPTED else f"error: {message}", err=True)
    sys.exit(code)


HELP = (
    "Measure how robust a quantized LLM's safety is to changes of its weights.\n\n"
    "Reading the numbers (sweep, interpolate, check and screen end with a verdict line "
    "saying what theirs mean):\n\n"
    + "\n\n".join(f"{name}: {meaning}" for name, meaning in MEANINGS.items())
)


@click.group(cls=_Group, help=HELP)
@click.version_option(__version__, prog_name="visage-local")
@click.option("--debug", is_flag=True, help="Show a traceback when a command fails.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's whole log on stderr.")
def main(debug: bool, verbose: bool) -> None:
    """The command group (its help is HELP)."""
    show_llama_logs(verbose)


main.add_command(inspect_command)
main.add_command(perturb_command)
main.add_command(sweep_command)
main.add_command(interpolate_command)
main.add_command(models_command)
main.add_command(fetch_command)
main.add_command(report_command)
main.add_command(compare_command)
main.add_command(check_command)
main.add_command(screen_command)
main.add_command(ladder_command)
main.add_command(rerun_command)
main.add_command(rejudge_command)
main.add_command(judge_agreement_command)
main.add_command(merge_command)
