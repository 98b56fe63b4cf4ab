"""`python -m camunda_bench` (what bench/run.sh runs): `runner.main`, and on an interrupt every
process the driver started stopped before it exits with 130.

bench/run.sh puts bench/ first on PYTHONPATH so that `-m` finds this package; it is taken off again
here (sys.path already has it), so that the processes the driver starts, the Python contender among
them, get the environment run.sh was started with."""

import os
import sys

from .common import BENCH, cleanup
from .runner import main

_path = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if _path[0] == BENCH:
    if _path[1:]:
        os.environ["PYTHONPATH"] = os.pathsep.join(_path[1:])
    else:
        del os.environ["PYTHONPATH"]

try:
    main()
except KeyboardInterrupt:
    cleanup()
    sys.exit(130)
