"""Dagster resources: the application database, the relation registry, the snapshot store."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.engine import Engine

from htd_pipelines.db import get_engine
from htd_pipelines.registry import Registry, cached_registry
from htd_pipelines.snapshots import SnapshotStore


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
    """Where snapshots go (HTD_SNAPSHOT_URI): a local folder or an object-store URI."""

    uri: str = Field(description="Root folder or URI of the snapshot store")
    zstd_level: int = Field(default=1, description="zstd compression level of Parquet files")

    def store(self) -> SnapshotStore:
        return SnapshotStore(self.uri, zstd_level=self.zstd_level)
