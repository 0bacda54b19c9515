"""The HTTP API: FastAPI in front of the job store and the Celery queues.

Nothing under ``app`` imports torch, directly or through what it imports: the API image is built
without it. Analyses run in the workers.
"""
