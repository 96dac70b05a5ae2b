"""The ``tagwatch`` command (also ``python -m tagwatch``): starts the model's child before importing
the rest when the command will need it (:mod:`tagwatch.prestart`), then runs :mod:`tagwatch.cli`."""

import os
import sys

from . import prestart

# numpy's OpenBLAS keeps a thread per core that spins for a while after every call.  The command's
# numpy work is small products (a batch of photos against the tag list), and the spinning took a core
# from the decode threads and exiftool: ~0.85 CPU-seconds per 200 photos indexed on a 2-core Xeon,
# 2-10% of the wall time (docs/speed.md, "Stages that overlap").  OpenBLAS reads this as numpy loads
# it, so it is set before the command's imports; a value set by the user is kept.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "1")


def main() -> int:
    os.environ.setdefault(*BLAS_THREADS)
    prestart.start_early(sys.argv[1:])
    from .cli import main as cli_main  # the imports the child's start overlaps

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
