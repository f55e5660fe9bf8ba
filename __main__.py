"""`gsearch` and `python -m gsearch`: the command line, with Ctrl-C quiet from the first moment.

The CLI's imports take a moment; a Ctrl-C during them would end in a Python traceback. Here
SIGINT exits quietly (status 130) until the CLI is loaded, then the previous handler is back
and the commands handle it themselves. A Ctrl-C while click parses the command line (before a
command runs) ends the same way, not in click's "Aborted!" with status 1. A process that
started with SIGINT ignored keeps ignoring it.

A command that ended (done, or a user's error) leaves without the interpreter's teardown:
the atexit handlers run and the output is flushed, then the process exits at once. Tearing
down torch, Optuna and scikit-learn object by object adds nothing a user needs and took 2 s
after the last line on a busy 2-core machine (docs/benchmarks.md, "A deadline under load").
A Python error still ends the usual way, with its traceback.
"""

import atexit
import os
import signal
import sys
import threading


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
    try:
        code = _command(cli)
        code = code if isinstance(code, int) else 0   # an int: --help's or --version's status
    except SystemExit as e:   # a command's own exit (a user's error: status 1)
        code = e.code
    _leave(code)


def _command(cli):
    """Click's standalone mode, except that an interrupt exits as above."""
    import click   # lazy: as above (the CLI has loaded it by now)

    try:
        return cli(standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            _quiet_exit(signal.SIGINT, None)
        click.echo("Aborted!", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code


def _leave(code) -> None:
    """Exit with `code` (as sys.exit reads it) after what the interpreter's own exit would wait
    for (threads that are not daemons, then the atexit handlers) and a flush, without its
    teardown of every module."""
    if code is not None and not isinstance(code, int):   # sys.exit("message")
        sys.stderr.write(f"{code}\n")
        code = 1
    threading._shutdown()   # as Python's exit: thread pools told to stop, the threads joined
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (gsearch ... | head): nothing to keep
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
