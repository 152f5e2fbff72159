"""The Alembic migrations bring an empty database to exactly the schema the models declare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app.db_migrations import MIGRATIONS_DIR, enable_migrations
from app.extensions import db

MIGRATIONS = MIGRATIONS_DIR
ROOT = Path(__file__).resolve().parent.parent


def test_upgrade_to_head_matches_the_models(make_app):
    app = make_app()
    enable_migrations(app)
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


def test_flask_db_commands_migrate_the_app(make_app):
    app = make_app()
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    alembic_config = AlembicConfig()
    alembic_config.set_main_option("script_location", MIGRATIONS)
    head = ScriptDirectory.from_config(alembic_config).get_current_head()
    assert head is not None
    with app.app_context():
        assert {"users", "usage_records"} <= set(inspect(db.engine).get_table_names())
        with db.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head
        downgrade(directory=MIGRATIONS, revision="base")
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


def test_a_server_process_does_not_load_alembic(tmp_path):
    probe = (
        "import sys; from app import create_app; create_app(); "
        "print(sorted(m for m in ('alembic', 'flask_migrate') if m in sys.modules))"
    )
    env = {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'probe.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
