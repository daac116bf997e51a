#!/usr/bin/env bash
# Builds a local Kubernetes control plane from published Go modules, into a cache outside the work
# tree keyed by version (a no-op once built):
#   - kube-apiserver, kube-controller-manager and kubectl from the module k8s.io/kubernetes at a release
#     tag. A small wrapper module requires it and replaces every staging module (k8s.io/api,
#     k8s.io/apiserver, k8s.io/client-go, ...) with its published v0.x release of the same minor: the
#     usual way to build Kubernetes outside its own repository.
#   - etcd from the module go.etcd.io/etcd/server/v3 (a three-line main calling etcdmain.Main, since
#     `go install` refuses the etcd root module for its replace directives).
# Nothing is downloaded but Go modules (through the Go module proxy) and Debian packages (openssl, curl).
#
#   scripts/build-control-plane.sh                 # the version the tests run on (KUBE_VERSION)
#   KUBE_VERSION=1.33.13 scripts/build-control-plane.sh   # the oldest supported version
# Prints nothing on stdout but the bin directory, so callers can do BIN=$(scripts/build-control-plane.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/kube-versions.sh
. "$HERE/kube-versions.sh"
VERSION=${KUBE_VERSION:-$KUBE_CURRENT}
ETCD=${ETCD_VERSION:-$ETCD_CURRENT}
ROOT=${KUBE_CP_CACHE_ROOT:-$HOME/.cache/webhook-operator}
CACHE=$ROOT/kube-v$VERSION
BIN=$CACHE/bin
ETCD_BIN=$ROOT/etcd-v$ETCD/bin
export DEBIAN_FRONTEND=noninteractive

need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
# The machine's Go lives in /usr/local/go when no profile put it on PATH.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { echo "Go 1.26 or newer is required to build the control plane: install it, then run this again" >&2; exit 1; }

# Module and build caches shared by every version, deleted after a successful build (they take GBs).
export GOMODCACHE=$ROOT/go/mod GOCACHE=$ROOT/go/build GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
built_something=0

if [ ! -x "$ETCD_BIN/etcd" ]; then
  echo "building etcd v$ETCD from go.etcd.io/etcd/server/v3 (once)" >&2
  W=$(mktemp -d); mkdir -p "$ETCD_BIN"
  cat > "$W/main.go" <<'GO'
// etcd's own main (go.etcd.io/etcd/v3) cannot be `go install`ed: its go.mod has replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$W" && go mod init wo-etcd >/dev/null 2>&1 && go get "go.etcd.io/etcd/server/v3@v$ETCD" >&2 \
    && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" . >&2)
  mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"; rm -rf "$W"; built_something=1
fi

if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ] || [ ! -x "$BIN/kubectl" ]; then
  echo "building kube-apiserver, kube-controller-manager and kubectl v$VERSION from k8s.io/kubernetes (once; 7–9 min on 2 cores)" >&2
  W=$(mktemp -d); mkdir -p "$BIN"
  MINOR=${VERSION#*.}; MINOR=${MINOR%%.*}
  # Every `k8s.io/x => ./staging/src/k8s.io/x` of the release's go.mod becomes `k8s.io/x => k8s.io/x v0.MINOR.PATCH`.
  MOD=$(cd "$W" && go mod download -json "k8s.io/kubernetes@v$VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  STAGING=$(sed -n 's|^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\1|p' "$MOD")
  {
    echo "module wo-control-plane"; echo; echo "go $(sed -n 's/^go //p' "$MOD")"; echo
    echo "require k8s.io/kubernetes v$VERSION"; echo
    echo "replace ("
    for m in $STAGING; do echo "	$m => $m v0.${VERSION#*.}"; done
    echo ")"
  } > "$W/go.mod"
  cat > "$W/tools.go" <<'GO'
//go:build tools

// The commands this module builds; kept as imports so `go mod tidy` records their dependencies.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$W" && go mod tidy >&2)
  LD="-s -w"
  for P in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LD="$LD -X $P.gitVersion=v$VERSION -X $P.gitMajor=1 -X $P.gitMinor=$MINOR -X $P.gitTreeState=clean"
  done
  for C in kube-apiserver kube-controller-manager kubectl; do
    (cd "$W" && go build -trimpath -ldflags "$LD" -o "$BIN/$C.tmp" "k8s.io/kubernetes/cmd/$C" >&2)
    mv "$BIN/$C.tmp" "$BIN/$C"
  done
  rm -rf "$W"; built_something=1
fi
ln -sf "$ETCD_BIN/etcd" "$BIN/etcd"

if [ "$built_something" = 1 ] && [ -z "${KEEP_GO_CACHE:-}" ]; then
  chmod -R u+w "$ROOT/go" 2>/dev/null || true; rm -rf "$ROOT/go"
fi
"$BIN/kube-apiserver" --version >&2
echo "$BIN"
