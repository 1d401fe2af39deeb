#!/usr/bin/env bash
# The system packages the project needs beside Python: PostgreSQL's server binaries (the embedded
# throwaway cluster) and Chromium (the run-log page test renders pages headlessly). Installs them with apt
# when missing and we may; otherwise says what is missing.
set -euo pipefail
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Chromium (apt-get install chromium) for the headless run-log page test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "Chromium could not be installed: the run-log page test will be skipped" >&2
fi
if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing PostgreSQL server binaries (apt-get install postgresql)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
  echo "PostgreSQL server binaries not found: install postgresql (or set CONDVEST_PG_DSN)" >&2
  exit 1
fi
