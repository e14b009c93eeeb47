#!/usr/bin/env bash
# Creates the virtualenv of the wire test (target/django-venv) with django-cqrs 3.1.0 from
# PyPI and the exact versions of its dependencies (requirements.txt), so every run tests
# against the same Python peer. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/django-venv"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import dj_cqrs, django' 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/django_wire/requirements.txt"
