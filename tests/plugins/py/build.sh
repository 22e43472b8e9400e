#!/bin/sh
# Build the `pydemo` test plugin into OUT_DIR/pydemo.wasm.
#
#   sh build.sh [OUT_DIR]        # OUT_DIR defaults to this folder
#
# The toolchain (componentize-py 0.25.1, which bundles its own CPython) is
# installed once into a venv under $OUTREACH_TOOLCHAINS (default
# /tmp/outreach-toolchains). Needs python3 (>= 3.8, with venv) and the PyPI
# registry for the first install. The component is built with
# componentize-py's default settings (WASI imports included, no --stub-wasi).
set -eu

CPY_VERSION=0.25.1
HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
WIT="$HERE/../../../wit/v0.2.0"
OUT_DIR=${1:-$HERE}
mkdir -p "$OUT_DIR"
OUT_DIR=$(CDPATH= cd -- "$OUT_DIR" && pwd)
TOOLCHAINS=${OUTREACH_TOOLCHAINS:-/tmp/outreach-toolchains}
TC="$TOOLCHAINS/componentize-py-$CPY_VERSION"
CPY="$TC/bin/componentize-py"
# componentize-py puts the active venv's (or the build Python's)
# site-packages on the bundled path; an empty venv keeps the build machine's
# packages out of the component.
EMPTY="$TOOLCHAINS/empty-venv"

mkdir -p "$TOOLCHAINS"
# One installer at a time (parallel test builds share the cache).
exec 9>"$TOOLCHAINS/.componentize-py.lock"
flock 9
if [ ! -x "$CPY" ] || [ ! -f "$TC/.complete" ]; then
  echo "build.sh: installing componentize-py $CPY_VERSION into $TC" >&2
  rm -rf "$TC"
  python3 -m venv "$TC"
  "$TC/bin/python" -m pip install --quiet --disable-pip-version-check \
    "componentize-py==$CPY_VERSION" >&2
  touch "$TC/.complete"
fi
if [ ! -f "$EMPTY/pyvenv.cfg" ]; then
  rm -rf "$EMPTY"
  python3 -m venv --without-pip "$EMPTY"
fi
flock -u 9

# Build next to the output, then move, so a reader never sees half a file.
TMP="$OUT_DIR/.pydemo.wasm.$$"
trap 'rm -f "$TMP"' EXIT
cd "$HERE"
PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV="$EMPTY" "$CPY" -d "$WIT" -w plugin \
  componentize plugin -p "$HERE" -o "$TMP" >&2
mv -f "$TMP" "$OUT_DIR/pydemo.wasm"
echo "$OUT_DIR/pydemo.wasm"
