"""The durable request log: journal, writer, SQLite and PostgreSQL stores, queries, encryption."""
