"""Shared code of the ID card OCR service: errors, request options, settings.

Both ``api`` and ``worker`` import from here; neither imports the other.
"""
