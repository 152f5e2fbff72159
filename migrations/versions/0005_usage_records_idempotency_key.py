"""usage records: an idempotency key, so a row queued twice is written once

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    # Nullable: older rows, and rows written without Redis, have none. NULLs never collide in a unique
    # index (PostgreSQL and SQLite alike), so only a row written twice is refused.
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=32), nullable=True))
        batch_op.create_index('uq_usage_records_idempotency_key', ['idempotency_key'], unique=True)


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index('uq_usage_records_idempotency_key')
        batch_op.drop_column('idempotency_key')
