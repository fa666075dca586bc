"""Thread policy, set before numpy or the bundled model loads (unless the user has set it).

On a shared machine the model's OpenMP threads must not spin while they wait: a spinning process
takes the cores its neighbours (a second bot, an ingest) need — two bot processes answered 40×
slower side by side. Sleeping at once costs a single answer twice its time (the threads are woken
for every layer), so they spin briefly (GOMP_SPINCOUNT, a few microseconds) and then sleep. numpy's
BLAS threads are kept to one: a large matrix product on many threads slows the next query
embedding ~8× once the index has a few thousand chunks.
"""

from __future__ import annotations

import os

OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
BLAS = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def configure() -> None:
    if not any(name in os.environ for name in OPENMP):  # a wait policy of one's own is kept whole
        os.environ.update(OPENMP)
    for name, value in BLAS.items():
        os.environ.setdefault(name, value)
