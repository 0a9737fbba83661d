"""WSGI entry point for gunicorn, Vercel and `flask run`: `wsgi:app`."""
from chatgpt_web import create_app

app = create_app()
