"""``python -m dlmed ...`` is the ``dlmed`` command (:mod:`dlmed.course.cli`), also where it is not on PATH."""

import sys

from dlmed.course.cli import main

sys.exit(main())
