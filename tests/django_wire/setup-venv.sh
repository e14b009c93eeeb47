#!/usr/bin/env bash
# Creates the virtualenv of the wire test (target/django-venv) with django-cqrs 3.1.0 from
# PyPI and the exact versions of its dependencies (requirements.txt), so every run tests
# against the same Python peer. Idempotent, and safe to run from several processes at once:
# they queue on a lock file, and the first one builds the virtualenv the others then find.
# The wire test runs it itself on first use.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${CQRS_DJANGO_VENV:-$root/target/django-venv}"
mkdir -p "$(dirname "$venv")"

ready() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import dj_cqrs, django' 2>/dev/null; }

exec 9>"$venv.lock"
flock 9
if ready; then
  exit 0
fi
# --clear: a virtualenv left half-built by an interrupted run is started again from nothing.
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/tests/django_wire/requirements.txt"
ready
