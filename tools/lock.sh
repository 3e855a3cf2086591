#!/usr/bin/env bash
# Regenerates requirements_lock.txt (pinned, with hashes) from requirements.in.
# Uses a throwaway venv so nothing on the host changes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3.11 -m venv "$venv"
"$venv/bin/pip" install -q pip-tools==7.6.2
"$venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
  --output-file requirements_lock.txt requirements.in
