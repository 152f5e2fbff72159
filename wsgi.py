"""WSGI entry for production servers: gunicorn -c gunicorn.conf.py wsgi:app"""

from dotenv import load_dotenv

load_dotenv()

from app import create_app  # noqa: E402

app = create_app()
