#!/bin/sh
# Build the `jsdemo` test plugin into OUT_DIR/jsdemo.wasm.
#
#   sh build.sh [OUT_DIR]        # OUT_DIR defaults to this folder
#
# The toolchain (componentize-js 0.23.0, SpiderMonkey/StarlingMonkey, with
# jco 1.35.0 and preview2-shim 0.25.0 as pinned in package-lock.json) is
# installed once into $OUTREACH_TOOLCHAINS (default /tmp/outreach-toolchains),
# in a folder named after the lockfile's hash, so a changed pin reinstalls.
# Needs node >= 18 and npm, and the npm registry for the first install.
# The component is built with componentize-js' default settings.
set -eu

HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
WIT="$HERE/../../../wit/v0.2.0"
OUT_DIR=${1:-$HERE}
mkdir -p "$OUT_DIR"
OUT_DIR=$(CDPATH= cd -- "$OUT_DIR" && pwd)
TOOLCHAINS=${OUTREACH_TOOLCHAINS:-/tmp/outreach-toolchains}

LOCK_HASH=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-12)
TC="$TOOLCHAINS/componentize-js-0.23.0-$LOCK_HASH"
CJS="$TC/node_modules/.bin/componentize-js"

mkdir -p "$TOOLCHAINS"
# One installer at a time (parallel test builds share the cache).
exec 9>"$TOOLCHAINS/.componentize-js.lock"
flock 9
if [ ! -x "$CJS" ] || [ ! -f "$TC/.complete" ]; then
  echo "build.sh: installing componentize-js into $TC" >&2
  rm -rf "$TC"
  mkdir -p "$TC"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$TC/"
  npm ci --prefix "$TC" --no-audit --no-fund --loglevel=error >&2
  touch "$TC/.complete"
fi
flock -u 9

# Build next to the output, then move, so a reader never sees half a file.
TMP="$OUT_DIR/.jsdemo.wasm.$$"
trap 'rm -f "$TMP"' EXIT
"$CJS" "$HERE/plugin.js" --wit "$WIT" --world-name plugin -o "$TMP" >&2
mv -f "$TMP" "$OUT_DIR/jsdemo.wasm"
echo "$OUT_DIR/jsdemo.wasm"
