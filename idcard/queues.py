"""The names the API and the workers agree on: queues, task names, completion signals.

The API never imports worker code: it sends tasks by name and waits for the
completion signal, so these strings are the whole contract between the two.
"""

from __future__ import annotations

# One queue per latency class, so a bulk backlog never delays an interactive call.
QUEUE_INTERACTIVE = "interactive"
QUEUE_BULK = "bulk"
# Webhook deliveries wait on other people's servers: never on the recognition queues.
QUEUE_WEBHOOKS = "webhooks"
QUEUE_MAINTENANCE = "maintenance"
ALL_QUEUES = (QUEUE_INTERACTIVE, QUEUE_BULK, QUEUE_WEBHOOKS, QUEUE_MAINTENANCE)

TASK_RECOGNIZE = "idcard.recognize_job"  # args: (job_id,)
TASK_DELIVER_WEBHOOK = "idcard.deliver_webhook"  # args: (job_id, event_id)
TASK_RECONCILE = "idcard.reconcile_stuck_jobs"
TASK_PURGE = "idcard.purge_expired"


def done_channel(job_id: str) -> str:
    """Redis pub/sub channel on which a worker announces that ``job_id`` ended.

    The message is the job's final status; the result itself is read from the
    database (it is encrypted there and never travels through Redis).
    """
    return f"idcard:job-done:{job_id}"
