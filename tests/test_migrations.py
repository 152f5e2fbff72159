"""The Alembic migrations bring an empty database to exactly the schema the models declare."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app.extensions import db

MIGRATIONS = str(Path(__file__).resolve().parent.parent / "migrations")


def test_upgrade_to_head_matches_the_models(make_app):
    app = make_app()
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade(directory=MIGRATIONS)
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        assert differences == []
        assert {"users", "auth_sessions", "api_keys"} <= set(inspect(db.engine).get_table_names())
        downgrade(directory=MIGRATIONS, revision="base")
        assert "users" not in inspect(db.engine).get_table_names()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
