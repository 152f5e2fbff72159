"""Command-line administration: `flask users set-role USERNAME admin|user`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from app.extensions import db
from app.models import User
from app.utils.validators import username_key

users = AppGroup("users", help="Manage users.")


@users.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(["admin", "user"]))
def set_role(username: str, role: str) -> None:
    """Make USERNAME an administrator, or a plain user again."""
    user = db.session.scalar(select(User).where(User.username_key == username_key(username)))
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    user.is_admin = role == "admin"
    db.session.commit()
    click.echo(f"{user.username} is now {'an admin' if user.is_admin else 'a plain user'}")


def register_cli(app: Flask) -> None:
    app.cli.add_command(users)
