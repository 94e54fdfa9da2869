"""Shared code of the ID card OCR service: errors, request options, settings, and the
data layer (models, db, jobs, batches, projects, webhooks, audit, crypto, migrate).

Both ``api`` and ``worker`` import from here; neither imports the other. Only ``errors``
and ``options`` are needed by ``idcard-ocr recognize``; the rest needs the ``service``
extra.
"""
