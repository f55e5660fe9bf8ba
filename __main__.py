"""`gsearch` and `python -m gsearch`: the command line, with Ctrl-C quiet from the first moment.

The CLI's imports take a moment; a Ctrl-C during them would end in a Python traceback. Here
SIGINT exits quietly (status 130) until the CLI is loaded, then the previous handler is back
and the commands handle it themselves. A process that started with SIGINT ignored keeps
ignoring it.
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
    try:
        from gsearch.search.cli import main as cli
    finally:
        signal.signal(signal.SIGINT, previous)
    cli()


if __name__ == "__main__":
    main()
