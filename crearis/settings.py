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

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL or None)
# Without a broker there is no worker: tasks run inline, in the calling process.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 6 * 60 * 60
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60

# --- Crearis Sync ---------------------------------------------------------------------------
# The app has a default for each (sync.conf.DEFAULTS); these read the environment.
BACKUP_DIR = Path(env.str("BACKUP_DIR", default=str(VAR_DIR / "backups")))
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
