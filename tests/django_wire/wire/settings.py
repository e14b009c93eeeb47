"""Settings from the environment, so one project serves every role of the wire test.

WIRE_ROLE       master | replica
WIRE_DB         path of the SQLite database
WIRE_AMQP_URL   amqp://user:password@host:port (django-cqrs 3.1.0 ignores the virtual host)
WIRE_EXCHANGE   the exchange (unique per test run)
WIRE_QUEUE      the replica queue
"""
import os

ROLE = os.environ.get("WIRE_ROLE", "master")

SECRET_KEY = "wire-test-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "dj_cqrs",
    "wire",
    "master_app" if ROLE == "master" else "replica_app",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("WIRE_DB", "wire.sqlite3"),
        "OPTIONS": {"timeout": 30},
    }
}

CQRS = {
    "transport": "dj_cqrs.transport.RabbitMQTransport",
    "url": os.environ.get("WIRE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"),
    "exchange": os.environ.get("WIRE_EXCHANGE", "cqrs"),
    "queue": os.environ.get("WIRE_QUEUE", "wire_replica"),
    "master": {"CQRS_MESSAGE_TTL": 86400},
    "replica": {"CQRS_MAX_RETRIES": 2, "CQRS_RETRY_DELAY": 1},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
