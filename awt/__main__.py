"""``python -m awt`` is the ``awt`` command (also under ``torchrun -m awt``)."""

from awt.cli import main

main()
