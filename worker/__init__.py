"""Analyses and the Celery tasks that run them.

Everything below ``worker`` except ``worker.tasks`` and ``worker.celery_app`` is plain library
code: it imports neither FastAPI nor Celery, so the command line runs it in-process.
"""
