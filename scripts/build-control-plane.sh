#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's `kubernetes` source
# package, with Debian's Go 1.19, into a cache outside the work tree (keyed by version). About 5 minutes
# on 2 cores the first time; a no-op afterwards. Also installs etcd-server and kubectl's prerequisites.
set -euo pipefail
VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${KUBE_CP_CACHE:-$HOME/.cache/webhook-operator/kube-$VERSION}
BIN=$CACHE/bin
export DEBIAN_FRONTEND=noninteractive

need_pkgs=()
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v kubectl >/dev/null || need_pkgs+=(kubernetes-client)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  if [ ${#need_pkgs[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null; fi
  echo "control plane binaries cached in $BIN"; exit 0
fi

mkdir -p "$CACHE"; cd "$CACHE"
# deb-src entries derived from the machine's own debian.sources
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/debian-src.sources
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends etcd-server golang-1.19-go golang-github-modern-go-reflect2-dev \
  openssl dpkg-dev "${need_pkgs[@]}" >/dev/null
apt-get source --download-only -qq "kubernetes=$DEB_VERSION"
tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
S=$CACHE/gopath/src/k8s.io/kubernetes; mkdir -p "$(dirname "$S")"; rm -rf "$S"; mv kubernetes-$VERSION "$S"; cd "$S"
# reflect2 v1.0.1 segfaults under Go >= 1.18 on the first custom-resource request; use Debian's 1.0.2
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/*_test.go
export PATH=/usr/lib/go-1.19/bin:$PATH GO111MODULE=off CGO_ENABLED=0 GOPATH=$CACHE/gopath GOCACHE=$CACHE/gocache GOPROXY=off GOFLAGS=
# pkg/generated/openapi is not shipped in the source tarball: generate it with the bundled openapi-gen
go build -o "$BIN/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
DIRS=$(find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
  | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u | grep -v '^vendor/k8s.io/code-generator\|^vendor/k8s.io/sample-apiserver')
IN=$(for d in $DIRS; do find "$d" -maxdepth 1 -type f -name '*.go'; done | xargs grep -l '+k8s:openapi-gen=' \
  | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
"$BIN/openapi-gen" -i "$IN" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$CACHE/violations.report"
LD="-s -w"
for P in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LD="$LD -X $P.gitVersion=v$VERSION -X $P.gitMajor=1 -X $P.gitMinor=20 -X $P.gitTreeState=clean"; done
go build -p 2 -ldflags "$LD" -o "$BIN/kube-apiserver.tmp" ./cmd/kube-apiserver
go build -p 2 -ldflags "$LD" -o "$BIN/kube-controller-manager.tmp" ./cmd/kube-controller-manager
mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"; mv "$BIN/kube-controller-manager.tmp" "$BIN/kube-controller-manager"
# the source tree and Go cache are large and only needed for the build
rm -rf "$CACHE/gopath" "$CACHE/gocache" "$CACHE"/kubernetes_*
"$BIN/kube-apiserver" --version
