"""``idcard-ocr batch``: many images at once, for nightly reprocessing.

- ``items``: what to read (a folder, a CSV or JSON Lines manifest; per-item options).
- ``output``: the results file (JSON Lines or CSV), appended line by line and resumable.
- ``local``: a pool of recognition processes on this machine.
- ``server``: bulk jobs on a running service, with idempotency keys.
- ``progress``: the progress line on stderr.
- ``command``: the command's options, the run and its summary.
"""

from idcard.bulk.command import add_batch_arguments, run_batch

__all__ = ["add_batch_arguments", "run_batch"]
