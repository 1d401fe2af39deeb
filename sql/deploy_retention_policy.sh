#!/usr/bin/env bash
# Deploy or preview the Postgres retention policy (the seed's script, same modes).
#
#   sql/deploy_retention_policy.sh local     deploy to CONDVEST_PG_DSN, or else to the embedded local cluster
#   sql/deploy_retention_policy.sh dry-run   show what an archive run would move (count, oldest, newest,
#                                            symbols); changes nothing
#   sql/deploy_retention_policy.sh rds       deploy to RDS: RDS_SECRET_ARN, or RDS_ENDPOINT + RDS_USERNAME +
#                                            RDS_PASSWORD (+ RDS_DB_NAME, default condvest)
#   sql/deploy_retention_policy.sh archive   run the archive now (CALL archive_old_ohlcv_data)
#   sql/deploy_retention_policy.sh adopt     convert the previous pipeline's raw_ohlcv, raw_ohlcv_archive and
#                                            data_retention_log in place (one transaction), then deploy;
#                                            dry-run first shows what it would do (add --target rds for RDS)
#
# Extra arguments go to python -m condvest.retention, e.g. --retention "3 years 1 month" --as-of 2025-10-17.
# Credentials come from the environment only; nothing here prints them. Set PYTHON to choose the interpreter.
set -euo pipefail

# In a checkout this runs from the repository (its .venv when present); installed as package data
# (condvest/_sql/ in a wheel or the container image) it uses the installed package and stays where it is.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checkout=false
[[ -f "$here/pyproject.toml" && -d "$here/condvest" ]] && checkout=true
if [[ -z "${PYTHON:-}" ]]; then
    if $checkout && [[ -x "$here/.venv/bin/python" ]]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

if $checkout; then cd "$here"; fi
mode="${1:-}"
[[ $# -gt 0 ]] && shift
case "$mode" in
    local)   exec "$PYTHON" -m condvest.retention deploy --target local "$@" ;;
    dry-run) exec "$PYTHON" -m condvest.retention dry-run "$@" ;;
    rds)     exec "$PYTHON" -m condvest.retention deploy --target rds "$@" ;;
    archive) exec "$PYTHON" -m condvest.retention archive "$@" ;;
    adopt)   exec "$PYTHON" -m condvest.retention adopt "$@" ;;
    *)       usage ;;
esac
