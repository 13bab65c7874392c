# System packages the tests need: Debian's MariaDB client library and pkg-config (mysqlclient
# compiles against them), docker-compose (validates docker/compose.yaml; no engine needed) and
# Debian's chromium, which the admin's browser tests drive through Playwright (tests/browser.py:
# no browser is downloaded at run time).
# Installed when we can (root + apt-get); otherwise we say exactly what is missing.
missing=()
pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists mariadb 2>/dev/null \
  || missing+=(default-libmysqlclient-dev pkg-config)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null \
  || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      "${missing[@]}" >/dev/null
  else
    echo "Missing Debian packages: ${missing[*]}. Install them with:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
