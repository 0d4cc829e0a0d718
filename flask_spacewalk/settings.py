"""Every ``SPACEWALK_*`` setting: one table of keys (default, parser,
meaning) and the :class:`Settings` read from it.

The Flask extension reads the settings with :meth:`Settings.from_mapping`
(constructor keywords, then ``app.config``, then ``SPACEWALK_*`` environment
variables, then the defaults); ``python -m flask_spacewalk.worker`` with
:meth:`Settings.from_environ` (command-line options, then the environment,
then the defaults). Nothing here imports Flask: the worker runs without it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import defaults
from .backends import check_url
from .errors import ConfigurationError
from .runtime.webhooks import Webhook, parse_webhooks

__all__ = [
    "DEFAULTS",
    "KEYS",
    "OPTIONS",
    "Key",
    "Settings",
    "check_options",
    "config_defaults",
    "environ_values",
    "parse_duration",
    "queue_name_for",
]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
#: Datastore URL schemes whose database holds the queue too, by default.
_QUEUE_TOO = ("sqlite:", "postgresql:", "postgres:")


def queue_name_for(service: str) -> str:
    """The queue of a service: ``<service>_jobs``, as ZeroG names it."""
    return f"{service}_jobs"


# -- parsers: a value from a config, a keyword or an environment string to
# its type; ValueError or TypeError say what is wrong with it


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, not {type(value).__name__}")


def _optional_text(value: Any) -> str | None:
    return None if value is None or value == "" else _text(value)


def _service_name(value: Any) -> str:
    name = _text(value)
    if not name:
        raise ValueError("must not be empty")
    return name


def _url_prefix(value: Any) -> str:
    # the tree checks the prefix itself when it builds the paths
    return "" if value is None else _text(value)


def _api_version(value: Any) -> str:
    return _optional_text(value) or defaults.API_VERSION


def _datastore_url(value: Any) -> str:
    url = _text(value)
    check_url(url, "datastore")
    return url


def _queue_url(value: Any) -> str | None:
    url = _optional_text(value)
    if url is not None:
        check_url(url, "queue")
    return url


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("expected true or false (or 1/0, yes/no, on/off)")
    return bool(value)


def _optional_boolean(value: Any) -> bool | None:
    return None if value is None or value == "" else _boolean(value)


def _byte_count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a number of bytes")
    number = int(value.strip() if isinstance(value, str) else value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    number = float(value)
    if not (number > 0 and math.isfinite(number)):  # NaN fails "> 0"
        raise ValueError("must be a finite number > 0")
    return number


#: Seconds in a unit of :func:`parse_duration`.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a text such as ``90s``, ``15m``, ``12h``,
    ``7d`` or ``600`` (seconds).

    :raise ValueError: anything else, or a negative, infinite or NaN number.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 12h, 7d or 600")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        factor = DURATION_UNITS.get(text[-1:])
        try:
            seconds = float(text[:-1] if factor else text) * (factor or 1)
        except ValueError:
            raise ValueError("expected a duration such as 90s, 15m, 12h, 7d or 600") from None
    if not 0 <= seconds < math.inf:  # NaN fails too
        raise ValueError("must be a finite duration >= 0")
    return seconds


def _retention(value: Any) -> float | None:
    if value is None or value == "":
        return None
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError("must be > 0 (None keeps every job)")
    return seconds


def _origins(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected origins as strings")
    return tuple(item.strip() for item in items if item.strip())


@dataclass(frozen=True)
class Key:
    """One ``SPACEWALK_*`` setting."""

    name: str
    default: Any
    #: the value to its type; raises ValueError or TypeError, or
    #: ConfigurationError for a bad URL
    parse: Callable[[Any], Any]
    #: one line, as docs/configuration.rst's table shows it
    meaning: str
    #: whether an error may show the value (not for URLs: passwords)
    shows_value: bool = True

    @property
    def option(self) -> str:
        """The constructor keyword: the name without ``SPACEWALK_``, lower case."""
        return self.name[len("SPACEWALK_"):].lower()

    def read(self, value: Any, source: str) -> Any:
        """``value`` parsed, or a ConfigurationError naming this key and
        ``source``."""
        try:
            return self.parse(value)
        except (ValueError, TypeError, ConfigurationError) as exc:
            shown = f" {value!r}" if self.shows_value else ""
            raise ConfigurationError(
                f"bad {self.name}{shown} (from {source}): {exc}"
            ) from None


#: Every key flask-spacewalk reads, in the order docs/configuration.rst
#: documents them.
KEYS: tuple[Key, ...] = (
    Key("SPACEWALK_SERVICE_NAME", defaults.SERVICE_NAME, _service_name,
        "the queue is named <service>_jobs"),
    Key("SPACEWALK_DATASTORE_URL", defaults.DATASTORE_URL, _datastore_url,
        "where job documents live; a relative sqlite path is in the instance folder",
        shows_value=False),
    Key("SPACEWALK_QUEUE_URL", None, _queue_url,
        "the queue; None: the datastore URL when that is SQLite or PostgreSQL,"
        " else required",
        shows_value=False),
    Key("SPACEWALK_URL_PREFIX", "", _url_prefix, "where the tree is mounted"),
    Key("SPACEWALK_MAX_CONTENT_LENGTH", defaults.MAX_CONTENT_LENGTH, _byte_count,
        "the largest POST body, in bytes"),
    Key("SPACEWALK_CORS_ORIGINS", None, _origins,
        "origins that may read the API from a browser; None: no CORS headers"),
    Key("SPACEWALK_EXPOSE_DUMP", True, _boolean, "serve GET {root}/dump/<uuid>"),
    Key("SPACEWALK_EXPOSE_DOCS", True, _boolean,
        "serve <prefix>/openapi.json and <prefix>/docs"),
    Key("SPACEWALK_API_TITLE", None, _optional_text,
        "info.title of the OpenAPI document; None: the app's name"),
    Key("SPACEWALK_API_VERSION", defaults.API_VERSION, _api_version,
        "info.version of the OpenAPI document"),
    Key("SPACEWALK_CONSOLE", True, _boolean, "serve the web console"),
    Key("SPACEWALK_EXPOSE_METRICS", True, _boolean,
        "serve <prefix>/metrics, <prefix>/healthz and <prefix>/readyz"),
    Key("SPACEWALK_JOB_TTR", defaults.JOB_TTR, _seconds,
        "seconds of lease on a reserved job, renewed while it runs"),
    Key("SPACEWALK_CANCEL_GRACE", defaults.CANCEL_GRACE, _seconds,
        "seconds a cancelled job has to reach a progress call"),
    Key("SPACEWALK_IDEMPOTENCY_TTL", defaults.IDEMPOTENCY_TTL, _seconds,
        "seconds an Idempotency-Key of POST {leaf}/job is remembered"),
    Key("SPACEWALK_HEARTBEAT", defaults.HEARTBEAT, _seconds,
        "seconds between two writes of a worker's record (GET {root}/workers)"),
    Key("SPACEWALK_MAX_WAIT", defaults.MAX_WAIT, _seconds,
        "the most seconds a request with Prefer: wait=N holds its answer"),
    Key("SPACEWALK_STREAM_MAX", defaults.STREAM_MAX, _seconds,
        "seconds after which the server ends an event stream (the client resumes)"),
    Key("SPACEWALK_WEBHOOKS", None, parse_webhooks,
        "endpoints POSTed to when a job ends: a list of {url, secret, events}"
        " (JSON in the environment)", shows_value=False),
    Key("SPACEWALK_RUN_INLINE", None, _optional_boolean,
        "run a POSTed job inside the request; None: follow app.testing"),
    Key("SPACEWALK_RETENTION", None, _retention,
        "workers delete jobs ended longer ago (seconds, or 90s, 15m, 12h, 7d);"
        " None: keep every job"),
)

_BY_NAME = {key.name: key for key in KEYS}
#: Every key with its default.
DEFAULTS: dict[str, Any] = {key.name: key.default for key in KEYS}
#: Constructor keywords and the keys they override.
OPTIONS: dict[str, str] = {key.option: key.name for key in KEYS}

def run_inline_from(config: Mapping[str, Any]) -> bool | None:
    """``SPACEWALK_RUN_INLINE`` as ``config`` holds it now, parsed as at
    start-up (``"false"`` is false): tests may switch it on a live app."""
    return _BY_NAME["SPACEWALK_RUN_INLINE"].read(  # type: ignore[no-any-return]
        config.get("SPACEWALK_RUN_INLINE"), _CONFIG
    )


#: Where a value came from, for messages; ``{option}`` is the key's keyword.
_KEYWORD = "the keyword {option}"
_CONFIG = "app.config"
_ENVIRON = "the environment"
_COMMAND_LINE = "the command line"


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options``, when every name is a known keyword.

    :raise TypeError: an unknown keyword, as a function call would.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown Spacewalk option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(OPTIONS))}"
        )
    return dict(options)


def environ_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every key set in ``environ`` (``os.environ`` by default), parsed.

    :raise ConfigurationError: a bad value, naming its variable.
    """
    environ = os.environ if environ is None else environ
    return {
        key.name: key.read(environ[key.name], _ENVIRON)
        for key in KEYS
        if key.name in environ
    }


def config_defaults(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What ``init_app`` writes back for the keys ``config`` leaves unset:
    the environment's value, parsed, else the default.

    :raise ConfigurationError: a bad environment value.
    """
    from_environ = environ_values(environ)
    return {
        key.name: from_environ.get(key.name, key.default)
        for key in KEYS
        if key.name not in config
    }


def _resolve(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Each key's value from the first layer that has it, else its default,
    parsed; by keyword name."""
    values: dict[str, Any] = {}
    for key in KEYS:
        for source, mapping in layers:
            if key.name in mapping:
                values[key.option] = key.read(
                    mapping[key.name], source.format(option=key.option)
                )
                break
        else:
            values[key.option] = key.read(key.default, "the defaults")
    return values


@dataclass(frozen=True)
class Settings:
    """One tree's resolved configuration (SPEC section 4)."""

    service_name: str
    datastore_url: str
    queue_url: str
    url_prefix: str
    max_content_length: int
    cors_origins: tuple[str, ...]
    expose_dump: bool
    job_ttr: float
    run_inline: bool | None
    cancel_grace: float
    idempotency_ttl: float = defaults.IDEMPOTENCY_TTL
    expose_docs: bool = True
    console: bool = True
    expose_metrics: bool = True
    #: ``info.title`` and ``info.version`` of the OpenAPI document.
    api_title: str = defaults.SERVICE_NAME
    api_version: str = defaults.API_VERSION
    #: Seconds an ended job is kept; None: for ever.
    retention: float | None = None
    heartbeat: float = defaults.HEARTBEAT
    max_wait: float = defaults.MAX_WAIT
    stream_max: float = defaults.STREAM_MAX
    #: ``SPACEWALK_WEBHOOKS``, checked.
    webhooks: tuple[Webhook, ...] = ()

    @property
    def queue_name(self) -> str:
        """The service's queue, ``<service>_jobs``."""
        return queue_name_for(self.service_name)

    @classmethod
    def from_mapping(
        cls,
        config: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        app_name: str | None = None,
    ) -> Settings:
        """The settings of a Flask app: constructor keywords (``options``,
        named as in :data:`OPTIONS`) win over ``config`` (``app.config``),
        which wins over ``SPACEWALK_*`` variables of ``environ``
        (``os.environ`` by default), which win over the defaults.

        ``run_inline`` is only the keyword's: the config key is read again
        at each request.

        :param app_name: the default ``api_title``.
        :raise ConfigurationError: a bad value, naming its key and where it
            came from.
        :raise TypeError: an unknown keyword.
        """
        options = check_options(options or {})
        environ = os.environ if environ is None else environ
        keywords = {OPTIONS[name]: value for name, value in options.items()}
        values = _resolve([(_KEYWORD, keywords), (_CONFIG, config), (_ENVIRON, environ)])
        run_inline = None
        if "run_inline" in options:
            run_inline = _BY_NAME["SPACEWALK_RUN_INLINE"].read(
                options["run_inline"], _KEYWORD.format(option="run_inline")
            )
        return cls._from_values(values, run_inline, app_name)

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """The settings of ``python -m flask_spacewalk.worker``: command-line
        ``overrides`` (by keyword name; None means not given) win over
        ``SPACEWALK_*`` variables of ``environ`` (``os.environ`` by default),
        which win over the defaults.

        :raise ConfigurationError: a bad value, naming its key and where it
            came from.
        """
        given = check_options({k: v for k, v in (overrides or {}).items() if v is not None})
        environ = os.environ if environ is None else environ
        command_line = {OPTIONS[name]: value for name, value in given.items()}
        values = _resolve([(_COMMAND_LINE, command_line), (_ENVIRON, environ)])
        return cls._from_values(values, None, None)

    @classmethod
    def _from_values(
        cls, values: dict[str, Any], run_inline: bool | None, app_name: str | None
    ) -> Settings:
        datastore_url: str = values["datastore_url"]
        queue_url: str | None = values["queue_url"]
        if queue_url is None:
            if not datastore_url.lower().startswith(_QUEUE_TOO):
                raise ConfigurationError(
                    "a queue URL is required when the datastore is not SQLite or "
                    "PostgreSQL: set SPACEWALK_QUEUE_URL (or --queue of python -m "
                    "flask_spacewalk.worker)"
                )
            queue_url = datastore_url
        return cls(
            service_name=values["service_name"],
            datastore_url=datastore_url,
            queue_url=queue_url,
            url_prefix=values["url_prefix"],
            max_content_length=values["max_content_length"],
            cors_origins=values["cors_origins"],
            expose_dump=values["expose_dump"],
            job_ttr=values["job_ttr"],
            run_inline=run_inline,
            cancel_grace=values["cancel_grace"],
            idempotency_ttl=values["idempotency_ttl"],
            expose_docs=values["expose_docs"],
            console=values["console"],
            expose_metrics=values["expose_metrics"],
            api_title=values["api_title"] or app_name or defaults.SERVICE_NAME,
            api_version=values["api_version"],
            retention=values["retention"],
            heartbeat=values["heartbeat"],
            max_wait=values["max_wait"],
            stream_max=values["stream_max"],
            webhooks=values["webhooks"],
        )
