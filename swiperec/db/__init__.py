"""Database access: the embedded server, connections, migrations and binary COPY."""

from swiperec.db.connection import connect, database_url

__all__ = ["connect", "database_url"]
