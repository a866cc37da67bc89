#!/usr/bin/env bash
# Build the Go client's example, doing only what changed: `buf generate`
# (into gen/, not committed) when the descriptor set, buf.gen.yaml, go.mod or
# go.sum changed, then `go vet` and `go build` (Go caches both) into bin/.
# The Go modules, protoc-gen-go and protoc-gen-go-grpc among them (go.mod's
# `tool` lines), come from the Go module proxy at the versions go.sum pins.
# Its one line on stdout is the path of the program.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# The descriptor set of protos/gridmesh/v1 with every import inside, as
# tools/genprotos.py writes it.
DESCRIPTOR="$ROOT/clients/gridmesh/v1/gridmesh.pb"
BUF="$ROOT/tools/buf/node_modules/.bin/buf"

exec 3>&1 1>&2 # progress to stderr; stdout is for the path alone
cd "$HERE"
command -v go >/dev/null || { echo "build.sh: needs Go 1.26+ (go.mod)" >&2; exit 1; }
[ -f "$DESCRIPTOR" ] || { echo "build.sh: no $DESCRIPTOR; run: python tools/genprotos.py" >&2; exit 1; }
if [ ! -x "$BUF" ]; then
  echo "installing buf (tools/buf/package-lock.json)"
  (cd "$ROOT/tools/buf" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Everything go.mod requires, plugins included, checked against go.sum.
go mod download

stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }
want=$(stamp "$DESCRIPTOR" buf.gen.yaml go.mod go.sum)
if [ "$(cat gen/.gridmesh-generated 2>/dev/null)" != "$want" ]; then
  echo "generating gen/ from $DESCRIPTOR"
  # gridmesh/v1 only: its imports are Go packages already (see buf.gen.yaml).
  "$BUF" generate "$DESCRIPTOR#format=binpb" --template buf.gen.yaml --path gridmesh/v1
  echo "$want" > gen/.gridmesh-generated
fi

go vet ./...
# No VCS stamp: the binary needs none, and it spares a git call per build.
go build -buildvcs=false -o bin/gridmesh-example ./cmd/example
echo "$HERE/bin/gridmesh-example" >&3
