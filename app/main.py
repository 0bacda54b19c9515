"""The ASGI application for uvicorn: ``uvicorn app.main:app``."""

from app.factory import create_app

app = create_app()
