"""Where each exporter sends: keyword arguments of ``instrument()``, then environment variables, then defaults.

Standard variables are honoured where a backend defines them
(``OTEL_EXPORTER_PROMETHEUS_HOST/PORT``, ``DD_AGENT_HOST``,
``DD_DOGSTATSD_PORT``, ``WANDB_PROJECT``, and the ``OTEL_EXPORTER_OTLP_*``
family, which the OTLP exporters read themselves); CoreVital's own use the
``OTEL_INSTRUMENTATION_COREVITAL_`` prefix. Bad values raise
:class:`ConfigurationError` naming the option, at ``instrument()`` time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .._config import ENV_PREFIX
from .._errors import ConfigurationError

ENV_SQLITE_PATH = ENV_PREFIX + "SQLITE_PATH"
ENV_WANDB_PROJECT = ENV_PREFIX + "WANDB_PROJECT"
ENV_OTLP_JSON_DIR = ENV_PREFIX + "OTLP_JSON_DIR"
ENV_OTLP_JSON_MAX_BYTES = ENV_PREFIX + "OTLP_JSON_MAX_BYTES"
ENV_OTLP_JSON_BACKUPS = ENV_PREFIX + "OTLP_JSON_BACKUPS"
ENV_QUEUE_SIZE = ENV_PREFIX + "EXPORT_QUEUE_SIZE"

#: Keyword arguments of ``instrument()`` that configure exporters.
SETTING_KEYWORDS = (
    "prometheus_host", "prometheus_port", "sqlite_path", "wandb_project", "wandb_run",
    "dogstatsd_host", "dogstatsd_port", "otlp_json_dir", "otlp_json_max_bytes", "otlp_json_backups",
    "export_queue_size",
)


@dataclass(frozen=True)
class ExporterSettings:
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9464
    sqlite_path: Path = Path("corevital.sqlite3")
    wandb_project: str = "corevital"
    wandb_run: Any = None  # an existing wandb Run to log into instead of starting one
    dogstatsd_host: str = "127.0.0.1"
    dogstatsd_port: int = 8125
    otlp_json_dir: Path = Path("corevital-data")
    otlp_json_max_bytes: int = 100 * 1024 * 1024  # rotate each file past 100 MiB; 0 never rotates
    otlp_json_backups: int = 5
    export_queue_size: int = 1000  # reports waiting for the report exporters; more are dropped


def _int(value: Any, source: str, low: int, high: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{source}={value!r} is not a whole number.") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigurationError(f"{source}={value!r} must be {bound}.")
    return number


def _host(value: Any, source: str) -> str:
    text = str(value).strip()
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise ConfigurationError(f"{source}={value!r} is not a host name or address.")
    return "127.0.0.1" if text == "localhost" else text


def resolve_settings(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ExporterSettings:
    env = os.environ if environ is None else environ

    def pick(key: str, *env_keys: str) -> tuple[Any, str] | None:
        if kwargs.get(key) is not None:
            return kwargs[key], key
        for env_key in env_keys:
            if env.get(env_key, "").strip():
                return env[env_key], env_key
        return None

    values: dict[str, Any] = {}
    if (found := pick("prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST")) is not None:
        values["prometheus_host"] = _host(*found)
    if (found := pick("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT")) is not None:
        values["prometheus_port"] = _int(*found, low=0, high=65535)
    if (found := pick("sqlite_path", ENV_SQLITE_PATH)) is not None:
        values["sqlite_path"] = Path(str(found[0])).expanduser()
    if (found := pick("wandb_project", ENV_WANDB_PROJECT, "WANDB_PROJECT")) is not None:
        values["wandb_project"] = str(found[0])
    if kwargs.get("wandb_run") is not None:
        values["wandb_run"] = kwargs["wandb_run"]
    if (found := pick("dogstatsd_host", "DD_DOGSTATSD_HOST", "DD_AGENT_HOST")) is not None:
        values["dogstatsd_host"] = _host(*found)
    if (found := pick("dogstatsd_port", "DD_DOGSTATSD_PORT")) is not None:
        values["dogstatsd_port"] = _int(*found, low=1, high=65535)
    if (found := pick("otlp_json_dir", ENV_OTLP_JSON_DIR)) is not None:
        values["otlp_json_dir"] = Path(str(found[0])).expanduser()
    if (found := pick("otlp_json_max_bytes", ENV_OTLP_JSON_MAX_BYTES)) is not None:
        values["otlp_json_max_bytes"] = _int(*found, low=0)
    if (found := pick("otlp_json_backups", ENV_OTLP_JSON_BACKUPS)) is not None:
        values["otlp_json_backups"] = _int(*found, low=0)
    if (found := pick("export_queue_size", ENV_QUEUE_SIZE)) is not None:
        values["export_queue_size"] = _int(*found, low=1)
    return ExporterSettings(**values)
