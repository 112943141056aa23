"""Alembic environment: migrations run on the connection `schema.ensure_schema` hands over.

There is no alembic.ini and no URL here: the app opens the connection, takes the
start-up lock and begins the transaction; Alembic runs inside it.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
