"""``python -m flts`` is the ``flts`` command (used to start service processes)."""

from flts.cli import main

main()
