"""The ``imgtools`` command line.

Each subcommand lives in its own module under ``imgtools.commands`` and is imported only when it
runs, so ``imgtools --help`` is instant and one command's heavy imports (pyarrow, huggingface_hub)
never slow another. Errors the user can fix print as one clear message with a meaningful exit
code (see ``imgtools.errors``), not as a traceback.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys

import click

from imgtools import __version__
from imgtools.errors import UserError
from imgtools.pipeline import interrupt

# command name -> (module, attribute, one-line help shown by ``imgtools --help``)
_COMMANDS = {
    "build": ("imgtools.commands.build", "build", "Build a dataset from a raw ImageNet tree."),
    "demo": ("imgtools.commands.demo", "demo", "Run a whole build on a generated sample tree."),
    "convert": ("imgtools.commands.convert", "convert",
                "Convert between folder, TFRecord, WebDataset and Parquet."),
    "push-hub": ("imgtools.commands.hub", "push_hub", "Publish a dataset to the Hugging Face Hub."),
    "info": ("imgtools.commands.inspect", "info", "Describe a dataset: format, splits, classes."),
    "verify": ("imgtools.commands.inspect", "verify", "Decode and check every image and record."),
    "stats": ("imgtools.commands.inspect", "stats", "Per-channel mean/std of a split, streamed."),
    "preview": ("imgtools.commands.inspect", "preview",
                "Contact sheet and class histogram PNGs."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, helptext) for name, (_, _, helptext) in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgtools")
def cli() -> None:
    """Make small ImageNet-derived vision datasets and move them between formats.

    \b
    imgtools demo                                      # try it: no ImageNet needed
    imgtools build imagenette --src ILSVRC/ --size 320 --out out/
    imgtools convert out/imagenette2-320 out/wds --to webdataset
    imgtools push-hub out/imagenette2-320 user/imagenette

    Exit codes: 0 success, 1 the job ran but found problems, 2 bad usage or input,
    3 network or Hub failure, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error(e: OSError) -> UserError:
    """An OSError that reached the top as a :class:`UserError` naming the file. A full disk gets
    its own advice: writers remove their temporary files, and finished shards are kept."""
    where = e.filename
    what = e.strerror or str(e)
    if e.errno in _DISK_FULL or "No space left" in str(e):
        return UserError(f"{what} (disk full, or a file-size or quota limit) while writing",
                         path=where, fix="free space there or choose an output on another disk, "
                         "then run the same command with --resume: finished work is kept and "
                         "no temporary file was left behind")
    return UserError(what, path=where, fix="check that path (a folder that can be created and "
                     "written, disk space, permissions)")


def _wants_json(argv: list[str] | None) -> bool:
    """Whether the command line asked for ``--json``: then errors are printed as JSON too, so
    a script reading stdout always gets one JSON object."""
    args = sys.argv[1:] if argv is None else argv
    return "--json" in args[:args.index("--")] if "--" in args else "--json" in args


def _fail(error: UserError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(error.as_json(), indent=2))
    click.secho(f"error: {error.message()}", fg="red", err=True)
    sys.exit(error.exit_code)


def limit_blas_threads() -> None:
    """One BLAS thread: numpy's OpenBLAS starts a thread per core as numpy loads, for linear
    algebra imgtools never does. In every worker process that is cores x workers idle threads,
    and in this process a running thread makes forking the workers unsafe, so they would be
    spawned instead, which costs more (see :mod:`imgtools.executors.local`). Must run before
    numpy is imported; a user's own ``OPENBLAS_NUM_THREADS`` wins."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> None:
    limit_blas_threads()
    interrupt.install()
    as_json = _wants_json(argv)
    try:
        cli.main(args=argv, prog_name="imgtools", standalone_mode=False)
    except UserError as e:
        _fail(e, as_json)
    except click.exceptions.Abort as e:  # click's wrapping of Ctrl-C and SIGTERM
        click.echo(interrupt.MESSAGE, err=True)
        interrupt.stop_workers()
        cause = e.__cause__
        sys.exit(interrupt.exit_code(cause) if isinstance(cause, KeyboardInterrupt)
                 else interrupt.EXIT_INTERRUPTED)
    except click.ClickException as e:
        if as_json:
            click.echo(json.dumps(UserError(e.format_message()).as_json(), indent=2))
        e.show()
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (see imgtools.pipeline.interrupt)
        click.echo(interrupt.MESSAGE, err=True)
        interrupt.stop_workers()
        sys.exit(interrupt.exit_code(e))
    except OSError as e:  # a path that cannot be used (a file where a folder is needed, ...)
        _fail(os_error(e), as_json)
    except Exception as e:
        if as_json:  # a bug: the traceback follows on stderr, stdout still gets one object
            click.echo(json.dumps({"error": {"what": f"internal error: {type(e).__name__}: "
                                             f"{e}", "path": None, "fix": "report this as a "
                                             "bug in imgtools", "exit_code": 1,
                                             "kind": "internal"}}, indent=2))
        raise
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
