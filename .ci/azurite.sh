#!/usr/bin/env bash
# Installs Azurite (Azure Storage emulator, from npm) once into a cache folder for the storage tests
# (tests/services.py starts its blob service on loopback). Idempotent and quiet: does nothing when the
# pinned version is there; a machine without npm gets no Azurite and those tests skip, saying why.
set -euo pipefail
version=3.37.0
prefix="${FTC_AZURITE_DIR:-$HOME/.cache/ftc-tests/azurite}"
if [ -f "$prefix/node_modules/azurite/package.json" ] && grep -q "\"version\": \"$version\"" "$prefix/node_modules/azurite/package.json"; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "azurite: npm not found; the Azure Blob storage tests will be skipped" >&2
    exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! npm install --prefix "$prefix" --no-audit --no-fund --silent "azurite@$version" >"$log" 2>&1; then
    cat "$log" >&2
    echo "azurite: npm install azurite@$version failed; the Azure Blob storage tests will be skipped" >&2
    exit 0
fi
echo "azurite: installed azurite@$version in $prefix" >&2
