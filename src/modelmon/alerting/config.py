"""``modelmon.yaml``: notification channels, routing and alert rules, declared once.

The file is validated with pydantic; every error names the key that is wrong, as a path
(``channels[2].webhook_url: ...``). Secrets are never written in the file: a secret field
holds ``$__env{VAR}`` (read from the environment) or ``$__file{/path}`` (read from a file),
and ``<field>_file: /path`` is accepted as a spelling of the latter. See docs/alerting.md.

Each channel type is one class here, which also writes its own Alertmanager receiver entry
and Grafana integration. The drift methods a rule accepts come from the method table
(``monitoring/methods.py``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from abc import abstractmethod
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from modelmon.errors import ModelmonError
from modelmon.monitoring.methods import PSI, MethodName

DEFAULT_RUNBOOK_BASE = "https://github.com/modelmon/modelmon/blob/main/docs/runbooks.md"
DURATION = re.compile(r"^((\d+)(ms|s|m|h|d|w|y))+$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_REF = re.compile(r"^\$__(env|file)\{([^}]+)\}$")
SEVERITIES = ("critical", "warning", "info")


class AlertingConfigError(ModelmonError):
    """``modelmon.yaml`` is invalid, or a secret it names cannot be read."""

    status_code = 400
    reason = "invalid_config"


# -- small value types --------------------------------------------------------------------


def check_duration(value: str) -> str:
    if not isinstance(value, str) or not DURATION.match(value):
        raise ValueError(f"{value!r} is not a duration; write it as Prometheus does, e.g. 30s, 5m, 1h or 1d")
    return value


#: Checked wherever it is used: a window that is not a duration would only fail later, in
#: Prometheus, as a rule it cannot parse.
Duration = Annotated[str, AfterValidator(check_duration), Field(json_schema_extra={"format": "prometheus-duration"})]


def duration_seconds(value: str) -> float:
    """A Prometheus duration (``1h30m``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for _, n, u in re.findall(r"((\d+)(ms|s|m|h|d|w|y))", check_duration(value)))


class SecretRef(BaseModel):
    """Where a secret comes from: an environment variable or a file, never the YAML."""

    model_config = ConfigDict(frozen=True)
    source: Literal["env", "file"]
    name: str  # the variable's name, or the file's path

    @classmethod
    def parse(cls, value: Any) -> SecretRef:
        if isinstance(value, SecretRef):
            return value
        if isinstance(value, dict) and set(value) <= {"source", "name"}:
            return cls(**value)
        if isinstance(value, str):
            match = SECRET_REF.match(value.strip())
            if match:
                return cls(source=match.group(1), name=match.group(2).strip())
        raise ValueError(
            "secrets are never written in modelmon.yaml: give $__env{VARIABLE} or $__file{/path/to/file} "
            "(or use the field's *_file form)"
        )

    def __str__(self) -> str:
        return f"$__{self.source}{{{self.name}}}"

    def resolve(self, where: str) -> str:
        """The secret's value, read now; errors name ``where`` (the config key)."""
        if self.source == "env":
            value = os.environ.get(self.name)
            if value is None:
                raise AlertingConfigError(f"{where}: environment variable {self.name} is not set")
            return value
        try:
            return Path(self.name).read_text().strip()
        except OSError as exc:
            raise AlertingConfigError(f"{where}: cannot read secret file {self.name} ({exc.strerror})") from None

    def grafana(self) -> str:
        """The same reference in Grafana provisioning syntax (expanded by Grafana)."""
        return f"${{{self.name}}}" if self.source == "env" else f"$__file{{{self.name}}}"


Secret = Annotated[SecretRef, Field(description="$__env{VAR} or $__file{/path}")]


def _secret_or_plain(value: Any) -> SecretRef | str:
    if isinstance(value, str) and not SECRET_REF.match(value.strip()):
        return value
    return SecretRef.parse(value)


def grafana_secret(value: SecretRef | str) -> str:
    """A field as Grafana provisioning takes it: a secret stays a reference Grafana expands."""
    return value if isinstance(value, str) else value.grafana()


@dataclasses.dataclass
class Secrets:
    """How an Alertmanager export writes secrets, and which ones it wrote into its file (by
    config key), so the export can say so."""

    substituted: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def value(self, ref: SecretRef, where: str) -> str:
        """The secret's value, to be written into the file."""
        self.substituted.append(where)
        return ref.resolve(where)

    def file_or_value(self, ref: SecretRef, key: str, where: str) -> dict[str, str]:
        """``<key>_file: path`` for a secret in a file (Alertmanager reads it), else
        ``<key>: value``, substituted now."""
        if ref.source == "file":
            return {f"{key}_file": ref.name}
        return {key: self.value(ref, where)}

    def bearer(self, token: SecretRef, where: str) -> dict[str, Any]:
        """``http_config`` sending ``token`` as a bearer token: read by Alertmanager from its
        file (``credentials_file``), or substituted when it comes from the environment."""
        auth: dict[str, str] = {"type": "Bearer"}
        if token.source == "file":
            auth["credentials_file"] = token.name
        else:
            auth["credentials"] = self.value(token, where)
        return {"authorization": auth}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RateLimit(_Strict):
    """At most ``messages`` messages to one notify-bridge channel in any ``per``; what is held
    back is merged into one digest, sent when the window allows."""

    messages: int = Field(ge=1, description="Most messages in any window.")
    per: Duration = Field(description="The window, e.g. 10m.")

    @field_validator("per")
    @classmethod
    def _per(cls, value: str) -> str:
        if duration_seconds(value) <= 0:
            raise ValueError(f"{value!r}: the window must be longer than 0s")
        return value


# -- channels ------------------------------------------------------------------------------
#
# A channel type is one class: its fields, and how it is written for Alertmanager
# (``alertmanager_integration``) and for Grafana (``grafana_integration``); it is listed in
# ``Channel`` below.

#: Notification templates of modelmon.tmpl (``alerting/templates.py``), as Alertmanager fields.
AM_TITLE = '{{ template "modelmon.title" . }}'
AM_TEXT = '{{ template "modelmon.text" . }}'
#: Grafana's default notification templates.
GRAFANA_TITLE = '{{ template "default.title" . }}'
GRAFANA_MESSAGE = '{{ template "default.message" . }}'


class _Channel(_Strict):
    name: str
    send_resolved: bool = Field(True, description="Also notify when the alert resolves.")

    #: Secret fields of this channel type; ``<field>_file: path`` is read as ``$__file{path}``.
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        """This channel in an Alertmanager receiver: its list's key (``slack_configs``...)
        and its entry. ``where`` is the channel's config key (``channels[2]``), for secrets
        substituted through ``secrets``."""

    @abstractmethod
    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        """This channel in a Grafana contact point: its integration type and settings, secrets
        kept as references; None when Grafana has no such integration."""

    def _resolved(self) -> dict[str, Any]:
        return {"send_resolved": self.send_resolved}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CHANNEL_NAME.match(value):
            raise ValueError(f"{value!r}: channel names are letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _secret_fields(cls, data: Any) -> Any:
        """``<field>_file: path`` becomes ``$__file{path}``; secret fields must be references."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in list(data):
            if key.endswith("_file") and key[: -len("_file")] in cls.SECRET_FIELDS:
                field = key[: -len("_file")]
                if field in data:
                    raise ValueError(f"give either {field} or {key}, not both")
                data[field] = f"$__file{{{data.pop(key)}}}"
        for field in cls.SECRET_FIELDS:
            if data.get(field) is not None:
                try:
                    data[field] = SecretRef.parse(data[field])
                except ValueError as exc:
                    raise _KeyError(field, str(exc)) from None
        return data


class EmailChannel(_Channel):
    type: Literal["email"]
    to: list[str] = Field(min_length=1, description="Recipient addresses.")

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an email address")
        return value

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        return "email_configs", {
            **self._resolved(), "to": ", ".join(self.to),
            "headers": {"Subject": AM_TITLE},
            "html": '{{ template "modelmon.email.html" . }}',
            "text": AM_TEXT,
        }

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        return "email", {"addresses": ";".join(self.to), "singleEmail": True}


class SlackChannel(_Channel):
    type: Literal["slack"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("webhook_url",)
    webhook_url: Secret = Field(description="The incoming-webhook URL (a secret).")
    channel: str | None = Field(None, description="Channel to post to, e.g. #ml-alerts [default: the webhook's].")

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        entry = {**self._resolved(), **secrets.file_or_value(self.webhook_url, "api_url", f"{where}.webhook_url")}
        if self.channel:
            entry["channel"] = self.channel
        return "slack_configs", entry | {"title": AM_TITLE, "text": AM_TEXT}

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        settings = {"url": grafana_secret(self.webhook_url)}
        if self.channel:
            settings["recipient"] = self.channel
        return "slack", settings


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("bearer_token",)
    url: SecretRef | str = Field(description="Where to POST Alertmanager's JSON (plain, or a secret reference).")
    bearer_token: Secret | None = Field(None, description="Sent as 'Authorization: Bearer ...'.")
    max_alerts: int = Field(0, ge=0, description="Most alerts in one payload (0: all).")

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        return _secret_or_plain(value)

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        url = self.url if isinstance(self.url, str) else secrets.value(self.url, f"{where}.url")
        entry = {**self._resolved(), "url": url, "max_alerts": self.max_alerts}
        if self.bearer_token is not None:
            entry["http_config"] = secrets.bearer(self.bearer_token, f"{where}.bearer_token")
        return "webhook_configs", entry

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        settings = {"url": grafana_secret(self.url), "httpMethod": "POST"}
        if self.bearer_token is not None:
            settings |= {"authorization_scheme": "Bearer", "authorization_credentials": grafana_secret(self.bearer_token)}
        if self.max_alerts:
            settings["maxAlerts"] = str(self.max_alerts)
        return "webhook", settings


class PagerDutyChannel(_Channel):
    type: Literal["pagerduty"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("routing_key",)
    routing_key: Secret = Field(description="Events API v2 integration (routing) key.")
    url: str | None = Field(None, description="Events API endpoint [default: PagerDuty's].")

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        entry = {**self._resolved(), **secrets.file_or_value(self.routing_key, "routing_key", f"{where}.routing_key")}
        if self.url:
            entry["url"] = self.url
        return "pagerduty_configs", entry | {
            "description": AM_TITLE,
            "severity": '{{ if eq .CommonLabels.severity "info" }}info{{ else if eq .CommonLabels.severity "warning" }}warning{{ else }}critical{{ end }}',
            "links": [{"href": '{{ template "modelmon.runbook" . }}', "text": "runbook"}],
        }

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        return "pagerduty", {"integrationKey": grafana_secret(self.routing_key), "summary": GRAFANA_TITLE}


class TelegramChannel(_Channel):
    type: Literal["telegram"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("bot_token",)
    bot_token: Secret
    chat_id: int
    api_url: str | None = Field(None, description="Bot API endpoint [default: Telegram's].")

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        entry = {**self._resolved(), "bot_token": secrets.value(self.bot_token, f"{where}.bot_token"),
                 "chat_id": self.chat_id, "parse_mode": "HTML",
                 "message": '{{ template "modelmon.telegram" . }}'}
        if self.api_url:
            entry["api_url"] = self.api_url
        return "telegram_configs", entry

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        return "telegram", {"bottoken": grafana_secret(self.bot_token), "chatid": str(self.chat_id), "message": GRAFANA_MESSAGE}


class DiscordChannel(_Channel):
    type: Literal["discord"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("webhook_url",)
    webhook_url: Secret

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        return "discord_configs", {
            **self._resolved(), "webhook_url": secrets.value(self.webhook_url, f"{where}.webhook_url"),
            "title": AM_TITLE, "message": AM_TEXT,
        }

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        return "discord", {"url": grafana_secret(self.webhook_url), "title": GRAFANA_TITLE, "message": GRAFANA_MESSAGE}


class SnsChannel(_Channel):
    """SMS (``phone_number``) or a topic (``topic_arn``) through Amazon SNS. Credentials come
    from ``access_key``/``secret_key`` or, when those are not given, from the AWS default
    chain of the Alertmanager process (``AWS_ACCESS_KEY_ID``... or an instance role)."""

    type: Literal["sns"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("access_key", "secret_key")
    phone_number: str | None = None
    topic_arn: str | None = None
    region: str
    access_key: Secret | None = None
    secret_key: Secret | None = None
    api_url: str | None = None

    @model_validator(mode="after")
    def _target(self) -> SnsChannel:
        if (self.phone_number is None) == (self.topic_arn is None):
            raise ValueError("give exactly one of phone_number (SMS) or topic_arn")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither (AWS default credentials)")
        return self

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        sigv4: dict[str, str] = {"region": self.region}
        if self.access_key is not None and self.secret_key is not None:
            sigv4["access_key"] = secrets.value(self.access_key, f"{where}.access_key")
            sigv4["secret_key"] = secrets.value(self.secret_key, f"{where}.secret_key")
        entry = {**self._resolved(), "sigv4": sigv4, "subject": AM_TITLE, "message": '{{ template "modelmon.sms" . }}'}
        entry |= {"phone_number": self.phone_number} if self.phone_number else {"topic_arn": self.topic_arn}
        if self.api_url:
            entry["api_url"] = self.api_url
        return "sns_configs", entry

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        return None  # not among Grafana's provisioned integration types; use an apprise channel (sns://)


class AppriseChannel(_Channel):
    """Any Apprise URL (SMS through Twilio, Teams through workflows, X, ntfy...), delivered
    by ``modelmon notify-bridge``. The URLs carry credentials, so they are a secret: one or
    more URLs separated by spaces, commas or new lines."""

    type: Literal["apprise"]
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("urls",)
    urls: Secret
    rate_limit: RateLimit | None = Field(None, description="Messages per window to this channel [default: bridge.rate_limit].")

    def alertmanager_integration(self, where: str, bridge: BridgeSettings, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        entry = {**self._resolved(), "url": f"{bridge.url.rstrip('/')}/alertmanager/{self.name}",
                 "max_alerts": bridge.sender_max_alerts()}
        if bridge.token is not None:  # the bridge's token, from the same file or variable
            entry["http_config"] = secrets.bearer(bridge.token, "bridge.token")
        return "webhook_configs", entry

    def grafana_integration(self, bridge: BridgeSettings) -> tuple[str, dict[str, Any]] | None:
        settings = {"url": f"{bridge.url.rstrip('/')}/grafana/{self.name}", "httpMethod": "POST",
                    "maxAlerts": str(bridge.sender_max_alerts())}
        if bridge.token is not None:  # the bridge's token, expanded by Grafana from its file or variable
            settings |= {"authorization_scheme": "Bearer", "authorization_credentials": grafana_secret(bridge.token)}
        return "webhook", settings


Channel = Annotated[
    EmailChannel | SlackChannel | WebhookChannel | PagerDutyChannel | TelegramChannel | DiscordChannel
    | SnsChannel | AppriseChannel,
    Field(discriminator="type"),
]


class Smtp(_Strict):
    """Mail server for email channels (Alertmanager's global SMTP settings)."""

    smarthost: str = Field(description="host:port of the mail server.")
    sender: str = Field(alias="from", description="From address.")
    auth_username: str | None = None
    auth_password: Secret | None = None
    require_tls: bool = True
    hello: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _file_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "auth_password_file" in data:
            data = dict(data)
            if "auth_password" in data:
                raise ValueError("give either auth_password or auth_password_file, not both")
            data["auth_password"] = f"$__file{{{data.pop('auth_password_file')}}}"
        return data

    @field_validator("auth_password", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> Any:
        return None if value is None else SecretRef.parse(value)

    @field_validator("smarthost")
    @classmethod
    def _hostport(cls, value: str) -> str:
        if not re.match(r"^[^:\s]+:\d+$", value):
            raise ValueError(f"{value!r}: expected host:port")
        return value


class Routing(_Strict):
    """Who gets what. An alert goes to the channels of its model (in addition), then to its
    rule's own channels if the rule names any, else to the channels of its severity, else
    to ``default``."""

    default: list[str] = Field(default_factory=list, description="Channels for alerts no other route takes.")
    severity: dict[str, list[str]] = Field(default_factory=dict, description="Channels per severity.")
    models: dict[str, list[str]] = Field(default_factory=dict, description="Extra channels per model name.")
    watchdog: list[str] = Field(
        default_factory=list,
        description="Channels of the always-firing ModelmonWatchdog (a dead man's switch service) [default: none].",
    )
    group_by: list[str] = Field(default_factory=lambda: ["alertname", "model"])
    group_wait: Duration = "30s"
    group_interval: Duration = "5m"
    repeat_interval: Duration = "4h"
    resolve_timeout: Duration = "5m"

    @field_validator("group_wait", "group_interval", "repeat_interval", "resolve_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        return check_duration(value)

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in value:
            if key not in SEVERITIES:
                raise ValueError(f"{key!r}: severities are {', '.join(SEVERITIES)}")
        return value


# -- rules ----------------------------------------------------------------------------------


class _RuleCommon(_Strict):
    enabled: bool = True
    for_: Duration | None = Field(None, alias="for", description="How long the condition must hold before firing.")
    severity: Literal["critical", "warning", "info", "none"] | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the alert.")
    channels: list[str] = Field(default_factory=list, description="Send only to these channels (overrides severity routing).")

    @field_validator("for_")
    @classmethod
    def _for(cls, value: str | None) -> str | None:
        return None if value is None else check_duration(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"{key!r} is not a valid label name")
            if key in ("alertname", "severity"):
                raise ValueError(f"{key!r} is set by modelmon; use the rule's name or severity instead")
        return value


class ModelDown(_RuleCommon):
    lookback: Duration = Field("1h", description="How long a down target keeps its model and version labels.")


class TargetDown(_RuleCommon):
    share: float = Field(0.1, gt=0, lt=1, description="Share of the job's targets down (kube-prometheus' TargetDown: 10%).")


class JobAbsent(_RuleCommon):
    pass


class Watchdog(_RuleCommon):
    pass


class ErrorRatio(_RuleCommon):
    threshold: float = Field(0.05, gt=0, le=1, description="Share of inference requests that failed server-side (5xx).")
    window: Duration = Field("5m", description="Short window: the ratio must be above the threshold now...")
    long_window: Duration = Field("1h", description="...and over this long window (a multiwindow burn-rate alert).")
    min_requests: int = Field(100, ge=1, description="Least inference requests in the long window (a traffic floor).")


class ClientErrorRatio(_RuleCommon):
    threshold: float = Field(0.25, gt=0, le=1, description="Share of inference requests rejected as the client's mistake (4xx).")
    window: Duration = "30m"
    min_requests: int = Field(100, ge=1, description="Least inference requests in the window.")


class PredictionsStopped(_RuleCommon):
    window: Duration = Field("30m", description="No prediction in this window, while the model is loaded...")
    lookback: Duration = Field("1d", description="...by a model that made min_predictions in the lookback before it.")
    min_predictions: int = Field(100, ge=1)


class LatencyP99(_RuleCommon):
    threshold: float = Field(0.5, gt=0, description="Objective for the 99th percentile, in seconds.")
    quantile: float = Field(0.99, gt=0, lt=1)
    window: Duration = "5m"


class FeatureDrift(_RuleCommon):
    methods: Literal["auto"] | list[MethodName] = Field(
        "auto", description="auto: the server's verdict (p-value tests up to pvalue_max_rows rows, PSI above); or a list of methods."
    )
    pvalue_max_rows: int = Field(1000, ge=1, description="Keep equal to the server's DriftSettings.pvalue_max_rows.")


class FleetDrift(_RuleCommon):
    threshold: float = Field(PSI.default_threshold, gt=0, description="Fleet PSI of a feature over the window.")
    min_rows: int = Field(500, ge=1, description="Rows the window needs, pooled over replicas.")
    window: Duration | None = Field(None, description="A recording window [default: the first of prometheus.recording_windows].")


class DatasetDrift(_RuleCommon):
    threshold: float = Field(0.5, gt=0, le=1, description="Share of drifted features.")


class PredictionDrift(_RuleCommon):
    threshold: float = Field(PSI.default_threshold, gt=0, description="PSI of the predicted classes (a regressor's predicted "
                             "values) against the validation outputs.")


QualityMetric = Literal["accuracy", "f1_macro"]


def _all_quality_metrics() -> list[QualityMetric]:
    return ["accuracy", "f1_macro"]


class RealizedQuality(_RuleCommon):
    margin: float = Field(0.05, ge=0, lt=1, description="How far below the validation baseline counts as a drop.")
    window: Duration = "6h"
    # 1000 labels: at any baseline b the window accuracy's standard error is at most
    # sqrt(0.25 / 1000) = 1.6 points, so the 5-point margin is >= 3.2 standard errors and a model
    # as good as its baseline crosses it in < 0.1% of windows (at 100 labels: 1.7 SE, ~5%).
    min_labels: int = Field(1000, ge=1, description="Labelled predictions the window needs.")
    metrics: list[QualityMetric] = Field(default_factory=_all_quality_metrics)


class EstimatedAccuracy(_RuleCommon):
    margin: float = Field(0.05, ge=0, lt=1)
    window: Duration = "1h"
    min_rows: int = Field(100, ge=1, description="Predictions the window needs.")


ErrorMetric = Literal["mae", "rmse"]


def _all_error_metrics() -> list[ErrorMetric]:
    return ["mae", "rmse"]


class RealizedError(_RuleCommon):
    """A regressor's MAE or RMSE on labelled predictions above its validation baseline."""

    margin: float = Field(0.2, gt=0, description="How far above the validation baseline counts as worse, relative "
                          "(0.2: 20% above).")
    window: Duration = "6h"
    # 1000 labels: with normal errors the window MAE's relative standard error is
    # sqrt(1 - 2/pi) / sqrt(2/pi) / sqrt(1000) = 2.4% and the RMSE's sqrt(2 / 1000) / 2 = 2.2%,
    # so a 20% margin is >= 8 standard errors; with heavy tails (kurtosis 9) the RMSE's is
    # sqrt(8 / 1000) / 2 = 4.5%, still >= 4 standard errors: a model as good as its baseline
    # crosses the margin in far under 0.1% of windows.
    min_labels: int = Field(1000, ge=1, description="Labelled predictions the window needs.")
    metrics: list[ErrorMetric] = Field(default_factory=_all_error_metrics)


class EstimatedError(_RuleCommon):
    """A regressor's label-free estimated MAE or RMSE above its validation baseline."""

    margin: float = Field(0.2, gt=0, description="How far above the validation baseline counts as worse, relative.")
    window: Duration = "1h"
    # The estimate averages each row's expected error, which varies far less than the
    # realized errors do, so fewer rows give a steady figure; the estimate's own bias
    # (docs/regression-estimate.md) is what the margin has to cover.
    min_rows: int = Field(500, ge=1, description="Estimated predictions the window needs.")
    metrics: list[ErrorMetric] = Field(default_factory=_all_error_metrics)


class LabelCoverage(_RuleCommon):
    threshold: float = Field(0.1, gt=0, le=1, description="Least share of predictions that get a label.")
    window: Duration = "1d"
    min_predictions: int = Field(100, ge=1)
    require_some_labels: bool = Field(True, description="Only for models that received labels within labels_lookback.")
    labels_lookback: Duration = Field("7d", description="How far back a model counts as having a label pipeline.")


class NoLabels(_RuleCommon):
    window: Duration = Field("6h", description="No matched label for this long, from a model that had labels within labels_lookback.")
    labels_lookback: Duration = "7d"
    min_predictions: int = Field(100, ge=1, description="Predictions the window needs (a quiet model gets no labels either).")


class TrainingLossNaN(_RuleCommon):
    metrics: list[str] = Field(default_factory=lambda: ["loss"], min_length=1)


class TrainingPlateau(_RuleCommon):
    patience: int = Field(5, ge=1, description="Epochs without a new best validation loss.")
    lookback: Duration = Field("6h", description="How far back the best validation loss is looked for.")
    split: str = "validation"
    metric: str = "loss"


class TrainingStalled(_RuleCommon):
    threshold: float = Field(900, gt=0, description="Seconds since the run last reported.")


class BridgeDropped(_RuleCommon):
    window: Duration = Field("10m", description="How long the alert fires after notify-bridge dropped a delivery.")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return check_duration(value)


class BridgeFailed(_RuleCommon):
    window: Duration = Field("10m", description="How long the alert fires after notify-bridge gave up on a message.")


class PredictionLogDropping(_RuleCommon):
    window: Duration = Field("10m", description="How long the alert fires after the prediction log dropped rows.")


class RolloutRolledBack(_RuleCommon):
    window: Duration = Field("15m", description="How long the alert fires after a rollout was rolled back.")


class StreamConsumerStalled(_RuleCommon):
    window: Duration = Field("10m", description="How long a label consumer consumed nothing while messages waited.")


class StreamSpoolGrowing(_RuleCommon):
    window: Duration = Field("10m", description="How long prediction events waited on disk, their spool growing.")


class StreamEventsDropped(_RuleCommon):
    window: Duration = Field("10m", description="How long the alert fires after prediction events were dropped.")


class Builtins(_Strict):
    """The built-in rules, each on by default; every field can be overridden."""

    override_for: Duration | None = Field(None, description="Use this `for` for every built-in rule (tests and demos).")
    model_down: ModelDown = Field(default_factory=ModelDown)
    target_down: TargetDown = Field(default_factory=TargetDown)
    job_absent: JobAbsent = Field(default_factory=JobAbsent)
    watchdog: Watchdog = Field(default_factory=Watchdog)
    error_ratio: ErrorRatio = Field(default_factory=ErrorRatio)
    client_errors: ClientErrorRatio = Field(default_factory=ClientErrorRatio)
    predictions_stopped: PredictionsStopped = Field(default_factory=PredictionsStopped)
    latency_p99: LatencyP99 = Field(default_factory=LatencyP99)
    feature_drift: FeatureDrift = Field(default_factory=FeatureDrift)
    fleet_drift: FleetDrift = Field(default_factory=FleetDrift)
    dataset_drift: DatasetDrift = Field(default_factory=DatasetDrift)
    prediction_drift: PredictionDrift = Field(default_factory=PredictionDrift)
    realized_quality: RealizedQuality = Field(default_factory=RealizedQuality)
    estimated_accuracy: EstimatedAccuracy = Field(default_factory=EstimatedAccuracy)
    realized_error: RealizedError = Field(default_factory=RealizedError)
    estimated_error: EstimatedError = Field(default_factory=EstimatedError)
    label_coverage: LabelCoverage = Field(default_factory=LabelCoverage)
    no_labels: NoLabels = Field(default_factory=NoLabels)
    training_nan_loss: TrainingLossNaN = Field(default_factory=TrainingLossNaN)
    training_plateau: TrainingPlateau = Field(default_factory=TrainingPlateau)
    training_stalled: TrainingStalled = Field(default_factory=TrainingStalled)
    bridge_dropped: BridgeDropped = Field(default_factory=BridgeDropped)
    bridge_failed: BridgeFailed = Field(default_factory=BridgeFailed)
    prediction_log_dropping: PredictionLogDropping = Field(default_factory=PredictionLogDropping)
    rollout_rolled_back: RolloutRolledBack = Field(default_factory=RolloutRolledBack)
    stream_consumer_stalled: StreamConsumerStalled = Field(default_factory=StreamConsumerStalled)
    stream_spool_growing: StreamSpoolGrowing = Field(default_factory=StreamSpoolGrowing)
    stream_events_dropped: StreamEventsDropped = Field(default_factory=StreamEventsDropped)

    @field_validator("override_for")
    @classmethod
    def _for(cls, value: str | None) -> str | None:
        return None if value is None else check_duration(value)


Comparator = Literal[">", ">=", "<", "<=", "==", "!="]
Aggregation = Literal["last", "avg", "min", "max", "sum", "count", "rate", "increase", "quantile"]


class CustomRule(_RuleCommon):
    """A condition of your own: a metric, aggregated and compared with a threshold, or a
    raw PromQL ``expr`` (it fires for every series it returns)."""

    name: str = Field(description="The alert's name (alertname), e.g. ChurnAmountUnseen.")
    metric: str | None = None
    matchers: dict[str, str] = Field(default_factory=dict, description="Label filters, e.g. {feature: amount}; values are exact.")
    aggregation: Aggregation = "last"
    quantile: float | None = Field(None, gt=0, lt=1, description="For aggregation: quantile (a histogram's base name as metric).")
    by: list[str] = Field(default_factory=lambda: ["model", "version"], description="Labels kept (one alert per combination).")
    comparator: Comparator | None = None
    threshold: float | None = None
    window: Duration = "5m"
    expr: str | None = Field(None, description="Raw PromQL instead of metric/aggregation/comparator/threshold.")
    summary: str | None = None
    description: str | None = None
    runbook_url: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"{value!r}: alert names are letters, digits and '_', not starting with a digit")
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return check_duration(value)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_:][A-Za-z0-9_:]*$", value):
            raise ValueError(f"{value!r} is not a metric name")
        return value

    @field_validator("by")
    @classmethod
    def _by(cls, value: list[str]) -> list[str]:
        for label in value:
            if not LABEL_NAME.match(label):
                raise ValueError(f"{label!r} is not a label name")
        return value

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: dict[str, str]) -> dict[str, str]:
        for label in value:
            if not LABEL_NAME.match(label):
                raise ValueError(f"{label!r} is not a label name")
        return value

    @model_validator(mode="after")
    def _shape(self) -> CustomRule:
        if self.expr is not None:
            extra = [k for k in ("metric", "comparator", "threshold") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"give either expr or metric/comparator/threshold, not both ({', '.join(extra)} set)")
            return self
        missing = [k for k in ("metric", "comparator", "threshold") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (or give a raw PromQL expr)")
        if (self.aggregation == "quantile") != (self.quantile is not None):
            raise ValueError("quantile is given with aggregation: quantile, and only then")
        return self


class PrometheusSettings(_Strict):
    job: str = Field("modelmon", description="Scrape job (regex) of the model servers, for the target-down rule.")
    recording_windows: list[Duration] = Field(default_factory=lambda: ["1h"], description="Windows of the fleet drift and quality recording rules.")
    evaluation_interval: Duration | None = Field(None, description="Rule group interval [default: Prometheus's global one].")

    @field_validator("recording_windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for window in value:
            if not re.match(r"^\d+[smhdw]$", window):
                raise ValueError(f"{window!r}: a recording window is one Prometheus duration such as 30m, 1h or 1d")
        return value


class GrafanaSettings(_Strict):
    datasource_uid: str = Field("prometheus", description="UID of the Prometheus data source in Grafana.")
    url: str | None = Field(None, description="Grafana's address: alerts then link to their dashboard (dashboard_url).")
    folder: str = "modelmon"
    interval: Duration = "1m"
    org_id: int = 1


#: notify-bridge's default rate limit per channel: safe for SMS (at most 30 texts an hour).
DEFAULT_BRIDGE_RATE_LIMIT = {"messages": 5, "per": "10m"}


class BridgeSettings(_Strict):
    """``modelmon notify-bridge``: where it is reached, its token, its bounds and rate limits."""

    url: str = Field("http://127.0.0.1:9096", description="Where Alertmanager and Grafana reach `modelmon notify-bridge`.")
    attempts: int = Field(5, ge=1, description="Delivery attempts per message.")
    retry_seconds: float = Field(2.0, gt=0, description="First retry delay; doubles on every attempt.")
    token: Secret | None = Field(
        None, description="Bearer token the bridge requires, and Alertmanager and Grafana send (a secret; token_file: path)."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest webhook body accepted (413 above).")
    queue_size: int = Field(1000, ge=1, description="Most deliveries a channel holds (waiting, being sent or waiting to retry); more are dropped.")
    max_alerts: int = Field(20, ge=1, description="Alerts spelled out in one message; the rest are summarised.")
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(**DEFAULT_BRIDGE_RATE_LIMIT),
        description="Messages per window to each apprise channel (a channel's own rate_limit overrides it).",
    )

    @model_validator(mode="before")
    @classmethod
    def _file_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token_file" in data:
            data = dict(data)
            if "token" in data:
                raise ValueError("give either token or token_file, not both")
            data["token"] = f"$__file{{{data.pop('token_file')}}}"
        return data

    @field_validator("token", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> Any:
        return None if value is None else SecretRef.parse(value)

    def sender_max_alerts(self) -> int:
        """``max_alerts`` of Alertmanager's and Grafana's webhooks to the bridge, so their
        payloads stay under ``max_body_bytes`` (4 KiB an alert); the bridge's message says
        how many alerts the sender left out."""
        return max(1, self.max_body_bytes // 4096)

    def resolve_token(self) -> str | None:
        """The token, read now (None when none is configured); an empty one is an error."""
        if self.token is None:
            return None
        value = self.token.resolve("bridge.token")
        if not value:
            raise AlertingConfigError(f"bridge.token: {self.token} is empty")
        return value


class AlertingConfig(_Strict):
    """The whole of ``modelmon.yaml``."""

    version: Literal[1] = 1
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE
    smtp: Smtp | None = None
    channels: list[Channel] = Field(default_factory=list)
    routing: Routing = Field(default_factory=Routing)
    builtins: Builtins = Field(default_factory=Builtins)
    rules: list[CustomRule] = Field(default_factory=list)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = [c.name for c in self.channels]
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise _KeyError(f"channels[{i}].name", f"channel {name!r} is declared twice")
            seen.add(name)

        def check(key: str, refs: list[str]) -> None:
            for i, ref in enumerate(refs):
                if ref not in seen:
                    known = ", ".join(sorted(seen)) or "none declared"
                    raise _KeyError(f"{key}[{i}]", f"unknown channel {ref!r} (channels: {known})")

        check("routing.default", self.routing.default)
        check("routing.watchdog", self.routing.watchdog)
        for severity, refs in self.routing.severity.items():
            check(f"routing.severity.{severity}", refs)
        for model, refs in self.routing.models.items():
            check(f"routing.models.{model}", refs)
        for key in Builtins.model_fields:
            value = getattr(self.builtins, key)
            if isinstance(value, _RuleCommon):
                check(f"builtins.{key}.channels", value.channels)
        rule_names: set[str] = set()
        for i, rule in enumerate(self.rules):
            check(f"rules[{i}].channels", rule.channels)
            if rule.name in rule_names:
                raise _KeyError(f"rules[{i}].name", f"rule {rule.name!r} is declared twice")
            rule_names.add(rule.name)
        if any(isinstance(c, EmailChannel) for c in self.channels) and self.smtp is None:
            first = next(i for i, c in enumerate(self.channels) if isinstance(c, EmailChannel))
            raise _KeyError("smtp", f"required by the email channel channels[{first}] ({self.channels[first].name})")
        return self

    def channel(self, name: str) -> _Channel:
        return next(c for c in self.channels if c.name == name)


class _KeyError(ValueError):
    """A cross-reference error that knows its key (pydantic reports it at the root)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# -- loading ----------------------------------------------------------------------------


def format_errors(exc: ValidationError, source: str) -> str:
    """One line per problem, each naming its key as a path: ``channels[2].webhook_url``."""
    lines = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in {c.__name__ for c in _CHANNEL_TYPES} or str(part) in _CHANNEL_TAGS:
                continue  # the discriminated union's tag: not a key the user wrote
            else:
                path += f".{part}" if path else str(part)
        message = error["msg"].removeprefix("Value error, ")
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _KeyError):  # the error names a key below the one it was raised at
            path = f"{path}.{cause.key}" if path else cause.key
            message = cause.message
        elif error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and docs/alerting.md)"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown channel type; use one of {', '.join(sorted(_CHANNEL_TAGS))}"
        elif error["type"] == "union_tag_not_found":
            message = f"missing type; use one of {', '.join(sorted(_CHANNEL_TAGS))}"
        lines.append(f"{path or '(top level)'}: {message}")
    return f"{source}: " + "; ".join(lines)


_CHANNEL_TYPES: tuple[type[_Channel], ...] = get_args(get_args(Channel)[0])
_CHANNEL_TAGS = {get_args(c.model_fields["type"].annotation)[0] for c in _CHANNEL_TYPES}


def parse_config(data: Any, source: str = "modelmon.yaml") -> AlertingConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AlertingConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return AlertingConfig.model_validate(data)
    except ValidationError as exc:
        raise AlertingConfigError(format_errors(exc, source)) from None


def load_config(path: Path | str | None) -> AlertingConfig:
    """Read and validate ``modelmon.yaml``; ``None`` gives the defaults (built-in rules, no channels)."""
    if path is None:
        return AlertingConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise AlertingConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertingConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
