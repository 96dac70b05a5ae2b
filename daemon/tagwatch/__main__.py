"""The ``tagwatch`` command (also ``python -m tagwatch``): starts the model's child before importing
the rest when the command will need it (:mod:`tagwatch.prestart`), then runs :mod:`tagwatch.cli`."""

import sys

from . import prestart


def main() -> int:
    prestart.start_early(sys.argv[1:])
    from .cli import main as cli_main  # the imports the child's start overlaps

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
