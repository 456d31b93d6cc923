"""Demo application database (htdNew process module model) and its seed data."""

from htd_pipelines.demo.schema import (
    SESSION_LINKS,
    SESSION_TABLES,
    create_demo_schema,
    drop_demo_schema,
    metadata,
)

__all__ = [
    "SESSION_LINKS",
    "SESSION_TABLES",
    "create_demo_schema",
    "drop_demo_schema",
    "metadata",
]
