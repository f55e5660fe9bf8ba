"""`gsearch` and `python -m gsearch`: the command line, with Ctrl-C quiet from the first moment.

The CLI's imports take a moment; a Ctrl-C during them would end in a Python traceback. Here
SIGINT exits quietly (status 130) until the CLI is loaded, then the previous handler is back
and the commands handle it themselves. A Ctrl-C while click parses the command line (before a
command runs) ends the same way, not in click's "Aborted!" with status 1. A process that
started with SIGINT ignored keeps ignoring it.
"""

import signal
import sys


def _quiet_exit(signum, frame):
    sys.stderr.write("\ninterrupted\n")
    sys.exit(130)


def main() -> None:
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _quiet_exit)
    try:   # lazy: the CLI loads under the quiet Ctrl-C handler
        from gsearch.cli import main as cli
    finally:
        signal.signal(signal.SIGINT, previous)
    import click   # lazy: as above (the CLI has loaded it by now)

    try:   # click's standalone mode, except that an interrupt exits as above
        code = cli(standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            _quiet_exit(signal.SIGINT, None)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)   # an int: --help's or --version's status


if __name__ == "__main__":
    main()
