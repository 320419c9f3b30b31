"""A worker process with the fake runner, for the crash tests:
`python -m tests.jobs.worker_main STORE_URL LEASE_SECONDS`."""

from __future__ import annotations

import signal
import sys

from dreamserve.jobs.store import open_store
from dreamserve.jobs.worker import Worker
from tests.jobs.fakes import StepRunner


def main(url: str, lease: float) -> int:
    store = open_store(url)
    worker = Worker(store, StepRunner(steps=20, step_seconds=0.05), lease)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    worker.run()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
