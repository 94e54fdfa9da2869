"""A Celery worker whose recognition sleeps first: a test can then kill or stop it while
a job is surely in flight.

Run as ``python slow_worker.py worker -Q ...``; IDCARD_TEST_SLOW_SECONDS sets the sleep.
The patch is made before Celery forks its pool, so the pool processes inherit it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    import worker.recognition.engine as engine

    real = engine.recognize
    delay = float(os.environ.get("IDCARD_TEST_SLOW_SECONDS", "30"))

    def slow_recognize(*args: Any, **kwargs: Any) -> dict:
        time.sleep(delay)
        return real(*args, **kwargs)

    engine.recognize = slow_recognize

    from worker.celery_app import app

    return int(app.start(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
