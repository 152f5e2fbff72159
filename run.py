"""Development entry point: bring the database to head, then serve on HOST:PORT (default localhost:5000)."""

from __future__ import annotations

import os
import sys

from dotenv import load_dotenv

load_dotenv()

from app import create_app  # noqa: E402
from app.config import ConfigError  # noqa: E402
from app.db_migrations import enable_migrations  # noqa: E402


def main() -> int:
    try:
        app = create_app()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    from flask_migrate import upgrade

    enable_migrations(app)
    with app.app_context():
        upgrade()
    host = os.environ.get("HOST", "localhost")
    port = int(os.environ.get("PORT", "5000"))
    app.run(host=host, port=port, debug=app.config["DEBUG"], use_reloader=app.config["DEBUG"], threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
