#!/usr/bin/env bash
# Build the TypeScript client and its example, doing only what changed:
# `npm ci` when package.json or package-lock.json changed, `buf generate`
# (into src/gen, not committed) when the descriptor set or buf.gen.yaml
# changed, then tsc (incremental) into dist/. Its one line on stdout is the
# path of the entry script: run it with `node <path>`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The descriptor set of protos/gridmesh/v1 with every import (and
# google/rpc/error_details.proto) inside, as tools/genprotos.py writes it.
DESCRIPTOR="$(dirname "$HERE")/gridmesh/v1/gridmesh.pb"

exec 3>&1 1>&2 # progress to stderr; stdout is for the path alone
cd "$HERE"
command -v npm >/dev/null || { echo "build.sh: needs Node.js 20+ and npm" >&2; exit 1; }
[ -f "$DESCRIPTOR" ] || { echo "build.sh: no $DESCRIPTOR; run: python tools/genprotos.py" >&2; exit 1; }

stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }

want=$(stamp package.json package-lock.json)
if [ "$(cat node_modules/.gridmesh-installed 2>/dev/null)" != "$want" ]; then
  echo "installing the npm packages (package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.gridmesh-installed
fi

# npm's bin directory first: buf runs the protoc-gen-es plugin buf.gen.yaml names from PATH.
export PATH="$HERE/node_modules/.bin:$PATH"
want=$(stamp "$DESCRIPTOR" buf.gen.yaml package-lock.json)
if [ "$(cat src/gen/.gridmesh-generated 2>/dev/null)" != "$want" ]; then
  echo "generating src/gen from $DESCRIPTOR"
  # gridmesh/v1 and its imports (include_imports), and the error details a
  # client reads from a refused call, which no gridmesh/v1 file imports.
  buf generate "$DESCRIPTOR#format=binpb" --template buf.gen.yaml \
    --path gridmesh/v1 --path google/rpc/error_details.proto
  echo "$want" > src/gen/.gridmesh-generated
fi

tsc -p tsconfig.json
echo "$HERE/dist/example.js" >&3
