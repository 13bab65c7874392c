# mysqlclient (the MariaDB driver) compiles against Debian's client library: bring it when we
# can (root + apt-get), or say exactly what is missing.
if ! pkg-config --exists mysqlclient 2>/dev/null && ! pkg-config --exists mariadb 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      default-libmysqlclient-dev pkg-config >/dev/null
  else
    echo "Missing: Debian packages default-libmysqlclient-dev and pkg-config (needed to build" >&2
    echo "mysqlclient). Install them: sudo apt-get install default-libmysqlclient-dev pkg-config" >&2
    exit 1
  fi
fi
