"""Settings for the Crearis project.

Everything is read from the environment (or a ``.env`` file) with django-environ. The defaults
need nothing but Python: a SQLite file and a backup folder under ``var/``, Celery tasks run
inline when no broker is configured.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from sync.conf import DEFAULTS as SYNC_DEFAULTS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG=False.")
    SECRET_KEY = "django-insecure-crearis-development-only"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",  # schedules as rows people edit in the admin (docs/celery.md)
    "crearis.content",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "crearis.urls"
WSGI_APPLICATION = "crearis.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'crearis.sqlite3'}"),
}
if "DATABASE_URL" not in env:
    VAR_DIR.mkdir(exist_ok=True)  # the embedded default needs its folder, nothing else
# More aliases, for moving data between databases: SYNC_EXTRA_DATABASES="pg=postgres://…,maria=…"
for alias_url in env.list("SYNC_EXTRA_DATABASES", default=[]):
    alias, _, url = alias_url.partition("=")
    DATABASES[alias.strip()] = env.db_url_config(url.strip())
# Lets two test runs share one server: TEST_DB_SUFFIX=_a gives test_crearis_a.
TEST_DB_SUFFIX = env.str("TEST_DB_SUFFIX", default="")
for alias, config in DATABASES.items():
    if TEST_DB_SUFFIX and "sqlite" not in config["ENGINE"]:
        config.setdefault("TEST", {})["NAME"] = f"test_{config['NAME']}{TEST_DB_SUFFIX}"
    elif TEST_DB_SUFFIX:  # in memory, named apart: SQLite's import lock file is named after it
        memory = f"file:memorydb_{alias}{TEST_DB_SUFFIX}?mode=memory&cache=shared"
        config.setdefault("TEST", {})["NAME"] = memory
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # The WAL journal lets readers and one writer work at once: an export's snapshot does
        # not hold the site's writes back (the default rollback journal blocks every commit
        # while anyone reads). The mode is stored in the file; setting it again is a no-op.
        config.setdefault("OPTIONS", {}).setdefault("init_command", "PRAGMA journal_mode=WAL")
        # A writer waits this long (seconds) for another's transaction before "database is
        # locked": SQLite's five-second default failed an export's bookkeeping on a busy site.
        config["OPTIONS"].setdefault("timeout", 20)
    if config["ENGINE"] == "django.db.backends.mysql":
        # utf8mb4 so that any Unicode text (emoji included) survives a round trip.
        config.setdefault("OPTIONS", {}).setdefault("charset", "utf8mb4")
        config.setdefault("TEST", {}).update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "content.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Celery (docs/celery.md) ------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL or None)
# Without a broker there is no worker: tasks run inline, in the calling process.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# The queue tasks are sent to and workers read by default: several sites (or test runs) can
# share one Redis with a queue each.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# How long an export or import task may run (seconds): at the soft limit its job stops, failed
# and rolled back; at the hard limit the worker kills the process (the job shows stale).
SYNC_TASK_TIME_LIMIT = env.int(
    "SYNC_TASK_TIME_LIMIT", default=SYNC_DEFAULTS["SYNC_TASK_TIME_LIMIT"]
)
SYNC_TASK_SOFT_TIME_LIMIT = env.int(
    "SYNC_TASK_SOFT_TIME_LIMIT", default=SYNC_DEFAULTS["SYNC_TASK_SOFT_TIME_LIMIT"]
)
CELERY_TASK_TIME_LIMIT = SYNC_TASK_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = SYNC_TASK_SOFT_TIME_LIMIT
# A task message is acknowledged as its task starts (acks_late off, the sync tasks say so too):
# a job killed with its worker is not run again by itself, its row shows it stale, then failed.
# Each worker process reserves one message beyond the one it runs, and Redis gives a reserved
# message to another worker when it was not acknowledged within the visibility timeout: longer
# than the longest task, so a message waiting behind a long job is not handed out twice (a
# second delivery would still find its job no longer queued and do nothing).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Redis caveats: set all three, or the shortest wins.
CELERY_VISIBILITY_TIMEOUT = SYNC_TASK_TIME_LIMIT + 3600
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
# Beat schedules (docs/celery.md, "Schedules"): rows of django-celery-beat that people edit in
# the admin, installed by `manage.py syncschedule` — not CELERY_BEAT_SCHEDULE, whose entries
# beat writes over the rows on every start. Crontabs run in the site's time zone: a crontab
# in another zone than Celery's has made beat fire continuously (celery#9715).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Crearis Sync ---------------------------------------------------------------------------
# The app has a default for each (sync.conf.DEFAULTS); these read the environment.
BACKUP_DIR = Path(env.str("BACKUP_DIR", default=str(VAR_DIR / "backups")))
# Where archives live (docs/storage.md): the storage alias "sync". With SYNC_S3_BUCKET set, an
# S3 bucket (django-storages; credentials from boto3's usual sources: AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, an instance role…); otherwise a FileSystemStorage at BACKUP_DIR.
SYNC_S3_BUCKET = env.str("SYNC_S3_BUCKET", default="")


def s3_transfer_config():
    """How boto3 uploads an archive: in 8 MiB parts, 4 at a time, at most 4 parts read ahead
    into memory (boto3's defaults hold up to 15 parts, 120 MiB, in memory per upload)."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=4)
    config.max_in_memory_upload_chunks = 4  # s3transfer's own knobs, not in boto3's signature
    config.max_submission_concurrency = 1
    return config


if SYNC_S3_BUCKET:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "sync": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": SYNC_S3_BUCKET,
                "location": env.str("SYNC_S3_PREFIX", default=""),  # a folder in the bucket
                "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),  # MinIO, R2…
                "region_name": env.str("AWS_S3_REGION_NAME", default=None),
                # Never replace an archive: a taken name gets a suffix.
                "file_overwrite": False,
                # What open() spools in memory before rolling to a temporary file; the sync
                # engine itself streams reads past open() (docs/storage.md).
                "max_memory_size": env.int("AWS_S3_MAX_MEMORY_SIZE", default=16 * 1024 * 1024),
                "transfer_config": s3_transfer_config(),
            },
        },
    }
# Apps whose models `syncexport` takes when no --tables are given.
SYNC_DEFAULT_APPS = env.list("SYNC_DEFAULT_APPS", default=["content"])
# Fields left out of archives unless --include-secrets ("app_label.Model.field", fnmatch).
SYNC_SENSITIVE_FIELDS = env.list(
    "SYNC_SENSITIVE_FIELDS", default=SYNC_DEFAULTS["SYNC_SENSITIVE_FIELDS"]
)
# Generic references that no GenericForeignKey declares: (model label, content type field, id
# field). Their ids are written as the referenced record's sync key, like a GenericForeignKey's.
SYNC_GENERIC_RELATIONS = [("admin.LogEntry", "content_type", "object_id")]
# Largest archive member syncverify / syncimport will read, in bytes (a guard against bombs).
SYNC_MAX_MEMBER_SIZE = env.int(
    "SYNC_MAX_MEMBER_SIZE", default=SYNC_DEFAULTS["SYNC_MAX_MEMBER_SIZE"]
)
# Longest record line (one row, newline included) a reader takes into memory, and an export
# writes. Far above any real row; what each reading process may need for one line.
SYNC_MAX_LINE_SIZE = env.int("SYNC_MAX_LINE_SIZE", default=SYNC_DEFAULTS["SYNC_MAX_LINE_SIZE"])

# Import: largest target table nothing references whose key → id map is held in memory whole;
# larger ones are looked up a chunk at a time (memory stays flat, a little slower).
SYNC_KEY_MAP_LIMIT = env.int("SYNC_KEY_MAP_LIMIT", default=SYNC_DEFAULTS["SYNC_KEY_MAP_LIMIT"])
# Where import jobs keep their plans (see docs/plans.md): beside the backups, a volume the
# web and worker containers share.
SYNC_PLAN_DIR = Path(env.str("SYNC_PLAN_DIR", default=str(BACKUP_DIR / "plans")))
# Largest archive the admin's Upload archive page takes, in bytes.
SYNC_UPLOAD_MAX_SIZE = env.int(
    "SYNC_UPLOAD_MAX_SIZE", default=SYNC_DEFAULTS["SYNC_UPLOAD_MAX_SIZE"]
)
SYNC_PLAN_KEEP_DAYS = env.float("SYNC_PLAN_KEEP_DAYS", default=SYNC_DEFAULTS["SYNC_PLAN_KEEP_DAYS"])
SYNC_SAME_STAMP_CHECK = env.bool(
    "SYNC_SAME_STAMP_CHECK", default=SYNC_DEFAULTS["SYNC_SAME_STAMP_CHECK"]
)

# Rotation (docs/rotation.md): syncrotate's defaults and the daily task's policy. Unset: the
# rule is left out; with no rule at all, rotation deletes only failed jobs' leftovers.
BACKUP_KEEP_COUNT = env.int("BACKUP_KEEP_COUNT", default=None)
BACKUP_MAX_AGE_DAYS = env.int("BACKUP_MAX_AGE_DAYS", default=None)
SYNC_KEEP_DAILY = env.int("SYNC_KEEP_DAILY", default=SYNC_DEFAULTS["SYNC_KEEP_DAILY"])
SYNC_KEEP_WEEKLY = env.int("SYNC_KEEP_WEEKLY", default=SYNC_DEFAULTS["SYNC_KEEP_WEEKLY"])
SYNC_KEEP_MONTHLY = env.int("SYNC_KEEP_MONTHLY", default=SYNC_DEFAULTS["SYNC_KEEP_MONTHLY"])

# Jobs (docs/jobs.md): running exports and imports publish progress and a heartbeat, and read
# their cancel flag, through the "sync" cache, outside every database transaction. The default,
# files under var/, is shared by the processes of one host; processes on several hosts or
# containers (web and worker) must share Redis: SYNC_CACHE_URL=redis://127.0.0.1:6379/1.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "sync": env.cache_url("SYNC_CACHE_URL", default=f"filecache://{VAR_DIR / 'sync-cache'}"),
}
CACHES["sync"].setdefault("KEY_PREFIX", "crearis-sync")
if CACHES["sync"]["BACKEND"].endswith("FileBasedCache"):
    # A full file cache deletes a third of its entries at random: never a running job's.
    CACHES["sync"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 100_000)
# A running job whose heartbeat (once a second) is older than this is stale: its process is gone.
SYNC_JOB_STALE_AFTER = env.int(
    "SYNC_JOB_STALE_AFTER", default=SYNC_DEFAULTS["SYNC_JOB_STALE_AFTER"]
)

# Webhooks (docs/webhooks.md): a signed POST to each URL after every export and rotation
# (BACKUP_WEBHOOK_URL) / import (IMPORT_WEBHOOK_URL); several URLs comma-separated.
BACKUP_WEBHOOK_URL = env.list("BACKUP_WEBHOOK_URL", default=[])
IMPORT_WEBHOOK_URL = env.list("IMPORT_WEBHOOK_URL", default=[])
# The Standard Webhooks signing secret ("whsec_" + base64 of 24-64 random bytes); no default.
SYNC_WEBHOOK_SECRET = env.str("SYNC_WEBHOOK_SECRET", default="")
SYNC_WEBHOOK_CONNECT_TIMEOUT = env.float(
    "SYNC_WEBHOOK_CONNECT_TIMEOUT", default=SYNC_DEFAULTS["SYNC_WEBHOOK_CONNECT_TIMEOUT"]
)
SYNC_WEBHOOK_READ_TIMEOUT = env.float(
    "SYNC_WEBHOOK_READ_TIMEOUT", default=SYNC_DEFAULTS["SYNC_WEBHOOK_READ_TIMEOUT"]
)
SYNC_WEBHOOK_MAX_ATTEMPTS = env.int(
    "SYNC_WEBHOOK_MAX_ATTEMPTS", default=SYNC_DEFAULTS["SYNC_WEBHOOK_MAX_ATTEMPTS"]
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
