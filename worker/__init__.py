"""Workers: the Celery app and tasks, the job runner, the SSRF-safe fetcher, webhook
delivery, and recognition/ (the engine). Importing this package loads none of them."""
