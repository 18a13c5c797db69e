"""rollback pins seen on the bus

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_pins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fleet', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('revoked', sa.JSON(), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('signer', sa.String(length=128), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fleet', 'sequence')
    )
    with op.batch_alter_table('model_pins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_pins_fleet'), ['fleet'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_pins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_pins_fleet'))
    op.drop_table('model_pins')
