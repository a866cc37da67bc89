#!/usr/bin/env bash
# Build the Java client and its example, doing only what changed: `mvn
# initialize` fetches protoc and protoc-gen-grpc-java (Maven Central, at the
# versions pom.xml pins) into target/protoc, `buf generate` writes
# target/generated-sources/buf when the descriptor set, buf.gen.yaml or
# pom.xml changed, then `mvn package` compiles, runs the helpers' unit tests
# and makes target/gridmesh-example.jar (its dependencies in target/lib).
# Its one line on stdout is the path of the jar: run it with `java -jar <path>`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# The descriptor set of protos/gridmesh/v1 with every import inside, as
# tools/genprotos.py writes it.
DESCRIPTOR="$ROOT/clients/gridmesh/v1/gridmesh.pb"
BUF="$ROOT/tools/buf/node_modules/.bin/buf"
GENERATED=target/generated-sources/buf

exec 3>&1 1>&2 # progress to stderr; stdout is for the path alone
cd "$HERE"
command -v mvn >/dev/null || { echo "build.sh: needs Maven 3.8+ and a JDK 17+" >&2; exit 1; }
[ -f "$DESCRIPTOR" ] || { echo "build.sh: no $DESCRIPTOR; run: python tools/genprotos.py" >&2; exit 1; }
if [ ! -x "$BUF" ]; then
  echo "installing buf (tools/buf/package-lock.json)"
  (cd "$ROOT/tools/buf" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The code generators buf.gen.yaml names; Maven keeps no exec bit.
mvn -B -q -Dstyle.color=never initialize
chmod +x target/protoc/protoc target/protoc/protoc-gen-grpc-java

stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }
want=$(stamp "$DESCRIPTOR" buf.gen.yaml pom.xml)
if [ "$(cat "$GENERATED/.gridmesh-generated" 2>/dev/null)" != "$want" ]; then
  echo "generating $GENERATED from $DESCRIPTOR"
  # gridmesh/v1 only: its imports are classes of the jars pom.xml names (see buf.gen.yaml).
  "$BUF" generate "$DESCRIPTOR#format=binpb" --template buf.gen.yaml --path gridmesh/v1
  echo "$want" > "$GENERATED/.gridmesh-generated"
fi

mvn -B -q -Dstyle.color=never package
echo "$HERE/target/gridmesh-example.jar" >&3
