"""Our connection settings as each Kafka client wants them, in one place: librdkafka's dotted keys
(confluent-kafka's consumer, producer and admin client) and Faust's credentials (aiokafka).

The same security settings reach every client: SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 over
SASL_PLAINTEXT or SASL_SSL, TLS with a private CA file, and client certificates (mutual TLS).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError

from mmfeat.errors import KafkaAuthError, KafkaIOError
from mmfeat.settings import Settings
from mmfeat.untrusted import clean

log = logging.getLogger("mmfeat.kafka")

# Errors no retry can fix: credentials, TLS, or the ACLs refuse us.
_AUTH_CODES = {
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}
_HINT = "check MMFEAT_SECURITY_PROTOCOL, MMFEAT_SASL_* and MMFEAT_SSL_* (docs/configuration.md)"


class ClientErrors:
    """librdkafka's ``error_cb`` for one client.

    Logs each distinct error at most once a minute (escaped: broker names can come from metadata), and
    remembers the first error no retry can fix, so that the caller stops with one line
    (``raise_if_fatal``) instead of retrying forever."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.fatal: KafkaError | None = None
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError) -> None:
        text = clean(err.str(), 300)
        with self._lock:
            if (err.code() in _AUTH_CODES or err.fatal()) and self.fatal is None:
                self.fatal = err
            now = time.monotonic()
            if now - self._last.get(text, -1e9) < 60:
                return
            self._last[text] = now
        log.warning("kafka %s: %s", self.what, text)

    def raise_if_fatal(self) -> None:
        err = self.fatal
        if err is None:
            return
        if err.code() in _AUTH_CODES:
            raise KafkaAuthError(f"kafka {self.what}: the cluster refused us: {clean(err.str(), 300)}; {_HINT}")
        raise KafkaIOError(f"kafka {self.what}: fatal error: {clean(err.str(), 300)}")

    def explain(self, e: Exception, client: Any = None) -> KafkaIOError:
        """A client call failed: our error for it, naming an authentication failure when that is the cause.

        ``client``'s queued callbacks are served first: a blocking call such as list_topics does not serve
        them, so the error callback may not have seen the refusal yet."""
        if client is not None and self.fatal is None:
            deadline = time.monotonic() + 2.0
            while self.fatal is None and time.monotonic() < deadline:
                client.poll(0.1)
        try:
            self.raise_if_fatal()
        except KafkaIOError as fatal:
            return fatal
        detail = e.args[0].str() if e.args and isinstance(e.args[0], KafkaError) else str(e)
        return KafkaIOError(f"kafka {self.what}: {clean(detail, 300)}")


def connection_config(settings: Settings, errors: ClientErrors | None = None) -> dict[str, Any]:
    """Map our settings onto librdkafka keys, in one place."""
    if not settings.kafka.bootstrap_servers:
        raise KafkaIOError("no Kafka broker: run `mmfeat up` or set MMFEAT_BOOTSTRAP_SERVERS")
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "security.protocol": settings.kafka.security_protocol,
        "log_level": settings.kafka.kafka_log_level,
    }
    if settings.kafka.sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka.sasl_mechanism
    if settings.kafka.sasl_username:
        conf["sasl.username"] = settings.kafka.sasl_username
    if settings.kafka.sasl_password:
        conf["sasl.password"] = settings.kafka.sasl_password.get_secret_value()
    if settings.kafka.ssl_ca_location:
        conf["ssl.ca.location"] = str(settings.kafka.ssl_ca_location)
    if settings.kafka.ssl_certificate_location:
        conf["ssl.certificate.location"] = str(settings.kafka.ssl_certificate_location)
    if settings.kafka.ssl_key_location:
        conf["ssl.key.location"] = str(settings.kafka.ssl_key_location)
    if settings.kafka.ssl_key_password:
        conf["ssl.key.password"] = settings.kafka.ssl_key_password.get_secret_value()
    if settings.kafka.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka.ssl_endpoint_identification else "none"
    if errors is not None:
        conf["error_cb"] = errors
    return conf


def ssl_context(settings: Settings) -> Any:
    """The TLS context aiokafka (Faust) uses: the same CA, client certificate and host check as librdkafka."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(settings.kafka.ssl_ca_location) if settings.kafka.ssl_ca_location else None)
    if settings.kafka.ssl_certificate_location:
        password = settings.kafka.ssl_key_password.get_secret_value() if settings.kafka.ssl_key_password else None
        key = str(settings.kafka.ssl_key_location) if settings.kafka.ssl_key_location else None
        ctx.load_cert_chain(str(settings.kafka.ssl_certificate_location), key, password)
    if not settings.kafka.ssl_endpoint_identification:
        ctx.check_hostname = False
    return ctx


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for faust.App: None for PLAINTEXT, else SASL and/or TLS from the same settings."""
    import faust

    protocol = settings.kafka.security_protocol
    ctx = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol.startswith("SASL_"):
        password = settings.kafka.sasl_password.get_secret_value() if settings.kafka.sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka.sasl_username, password=password, mechanism=settings.kafka.sasl_mechanism, ssl_context=ctx
        )
    return faust.SSLCredentials(ctx) if ctx is not None else None
