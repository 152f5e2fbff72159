"""Schema migrations (Alembic, through Flask-Migrate), loaded only where they run: `flask db ...`,
run.py and the tests. A server worker never migrates, and importing Alembic into it cost about 10 MB
of memory per process (107 MB after create_app with it, 97 MB without)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask
from flask.cli import ScriptInfo

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def enable_migrations(app: Flask) -> None:
    """Bind Flask-Migrate to the app, once, so its commands and functions (upgrade, ...) work on it."""
    if "migrate" in app.extensions:
        return
    from flask_migrate import Migrate

    from app.extensions import db

    Migrate(app, db, directory=MIGRATIONS_DIR)


class MigrationCommands(click.Command):
    """`flask db ...`: hands its arguments to Flask-Migrate's own command group, imported on use."""

    def __init__(self) -> None:
        super().__init__(
            "db",
            help="Database migrations (Flask-Migrate): flask db upgrade, flask db migrate -m ..., ...",
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            add_help_option=False,  # `flask db --help` is Flask-Migrate's help
        )

    def invoke(self, ctx: click.Context) -> object:
        info = ctx.ensure_object(ScriptInfo)
        enable_migrations(info.load_app())
        from flask_migrate.cli import db

        return db.main(args=ctx.args, prog_name=ctx.command_path, obj=info, standalone_mode=False)
