"""Dagster resources: the application database, the relation registry, the snapshot store."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.engine import Engine

from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.registry.spec import Registry, cached_registry
from htd_pipelines.store.snapshots import SnapshotStore


class AppDatabase(ConfigurableResource):
    """The application database whose sessions are backed up (HTD_DATABASE_URL)."""

    url: str = Field(description="SQLAlchemy URL of the application database")

    def engine(self) -> Engine:
        return get_engine(self.url)


class RelationRegistry(ConfigurableResource):
    """The relation registry YAML (HTD_RELATIONS_FILE)."""

    path: str = Field(description="Path of the relation registry YAML")

    def load(self) -> Registry:
        return cached_registry(self.path)


class SnapshotStorage(ConfigurableResource):
    """Where snapshots go (HTD_SNAPSHOT_URI): a local folder or an object-store URI.

    Encryption is configured in the environment only, read when a run builds the store:
    HTD_ENCRYPTION_KEYS (``keyid:base64key,...``) and HTD_ENCRYPTION_KEY_ID (the key id new
    files are encrypted with; unset: no encryption). Keys never go in run config.
    """

    uri: str = Field(description="Root folder or URI of the snapshot store")
    zstd_level: int | None = Field(
        default=None,
        description="zstd compression level of Parquet files (1-22); unset: HTD_ZSTD_LEVEL "
        "at run time, else 1",
    )

    def store(self) -> SnapshotStore:
        return SnapshotStore(self.uri, zstd_level=self.zstd_level)
