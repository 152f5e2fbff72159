"""external calls: an idempotency key, so an audit row queued twice through Redis is written once; the
history is read by time (rows from the stream are numbered in batches, not in call order)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    # As for usage_records (0005): nullable, and NULLs never collide in the unique index.
    with op.batch_alter_table('external_calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=32), nullable=True))
        batch_op.create_index('uq_external_calls_idempotency_key', ['idempotency_key'], unique=True)
        batch_op.drop_index('ix_external_calls_user_id_id')
        batch_op.create_index('ix_external_calls_user_id_created_at', ['user_id', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('external_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_external_calls_user_id_created_at')
        batch_op.create_index('ix_external_calls_user_id_id', ['user_id', 'id'], unique=False)
        batch_op.drop_index('uq_external_calls_idempotency_key')
        batch_op.drop_column('idempotency_key')
