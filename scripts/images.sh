#!/usr/bin/env bash
# Builds container images as OCI archives, without a container daemon and without pulling any
# base image: every image starts FROM scratch and holds a binary plus exactly the shared
# libraries `ldd` names for it.
#
#   scripts/images.sh [NAME...]      NAME: operator agent (default), pause workload (test images)
#
# Output: target/images/<name>.tar (an OCI image layout, what `ctr images import` and
# `skopeo copy oci-archive:` read) and a line per image with its name and uncompressed size.
#
#   operator  ghcr.io/podtrace/podtrace-operator:<version>  release binary, CA bundle, uid 65532
#   agent     ghcr.io/podtrace/podtrace-agent:<version>     release binary (eBPF embedded), uid 0
#   pause     podtrace.test/pause:1                         the test node's sandbox (images/pause)
#   workload  podtrace.test/workload:1                      busybox-static: sh, httpd, nc, nslookup, dd
#   prometheus, prometheus-operator, prometheus-config-reloader
#             podtrace.test/<name>:<version>                built by e2e/scripts/build-tools.sh
#
# Why umoci: it writes an OCI image layout from a plain directory as a file operation, with no
# daemon, storage driver or registry (buildah needs a storage configuration and a mount for a
# scratch rootfs; skopeo only copies images that already exist). Debian packages it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PODTRACE_IMAGES_DIR:-$ROOT/target/images}"
REPOSITORY="${PODTRACE_IMAGE_REPOSITORY:-ghcr.io/podtrace}"
CARGO="${CARGO:-cargo}"
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"

for tool in umoci ldd strip; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing: run \`make setup\`" >&2; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
source_url=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
created=$(git -C "$ROOT" log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)

# copy_with_libs BIN ROOTFS DEST: BIN at ROOTFS/DEST, stripped, plus every library `ldd`
# resolves for it (at the same absolute path, dereferenced) and the ELF interpreter.
copy_with_libs() {
  local bin=$1 rootfs=$2 dest=$3
  install -D -m 0755 "$bin" "$rootfs$dest"
  strip --strip-unneeded "$rootfs$dest"
  local libs; libs=$(ldd "$bin" 2>&1 || true)
  [[ $libs == *"not a dynamic executable"* ]] && return 0
  awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]+ \(/{print $1}' <<<"$libs" | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
}

# smoke ROOTFS BIN: BIN must start inside its own rootfs, with only what was copied there.
smoke() {
  chroot "$1" "$2" --help >/dev/null || { echo "error: $2 does not start in its image's rootfs" >&2; exit 1; }
}

# pack NAME REF ROOTFS USER ENTRYPOINT TITLE: ROOTFS as the one layer of an OCI image tagged
# REF, written to $OUT/NAME.tar.
pack() {
  local name=$1 ref=$2 rootfs=$3 user=$4 entrypoint=$5 title=$6
  local layout="$WORK/$name-layout" tag="${ref##*:}"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci insert --image "$layout:$tag" --history.created "$created" "$rootfs" /
  umoci config --image "$layout:$tag" --history.created "$created" --created "$created" \
    --author "podtrace" --architecture amd64 --os linux \
    --config.user "$user" --config.entrypoint "$entrypoint" --config.workingdir / \
    --config.env PATH=/bin \
    --config.label "org.opencontainers.image.title=$title" \
    --config.label "org.opencontainers.image.source=$source_url" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "org.opencontainers.image.created=$created"
  umoci gc --layout "$layout"
  # containerd's importer names the image after this annotation (the full reference).
  python3 - "$layout/index.json" "$ref" <<'PY'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for m in index["manifests"]:
    m.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
PY
  mkdir -p "$OUT"
  tar --sort=name --mtime="@0" --owner=0 --group=0 -C "$layout" -cf "$OUT/$name.tar.tmp" .
  mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
  printf '%-26s %-56s %6.1f MiB uncompressed\n' "$name" "$ref" \
    "$(du -sb "$rootfs" | awk '{print $1 / 1048576}')"
}

build_release() {
  local missing=()
  for pkg in "$@"; do missing+=(-p "$pkg"); done
  (cd "$ROOT" && "$CARGO" build --release --locked "${missing[@]}")
}

names=("$@")
((${#names[@]})) || names=(operator agent)
rust=()
for n in "${names[@]}"; do
  case "$n" in
    operator | agent) rust+=("podtrace-$n") ;;
    pause | workload | prometheus | prometheus-operator | prometheus-config-reloader) ;;
    *) echo "usage: $0 [operator|agent|pause|workload|prometheus|prometheus-operator|prometheus-config-reloader ...]" >&2; exit 2 ;;
  esac
done
((${#rust[@]} == 0)) || build_release "${rust[@]}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for n in "${names[@]}"; do
  rootfs="$WORK/$n-rootfs"; mkdir -p "$rootfs/tmp"; chmod 1777 "$rootfs/tmp"
  case "$n" in
    operator)
      copy_with_libs "$RELEASE/podtrace-operator" "$rootfs" /podtrace-operator
      smoke "$rootfs" /podtrace-operator
      install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
      pack operator "$REPOSITORY/podtrace-operator:$version" "$rootfs" 65532:65532 /podtrace-operator \
        "podtrace operator"
      ;;
    agent)
      copy_with_libs "$RELEASE/podtrace-agent" "$rootfs" /podtrace-agent
      smoke "$rootfs" /podtrace-agent
      pack agent "$REPOSITORY/podtrace-agent:$version" "$rootfs" 0:0 /podtrace-agent "podtrace node agent"
      ;;
    pause)
      mkdir -p "$WORK/pause-build"
      gcc -static -Os -s -Wall -Wextra -Werror -o "$WORK/pause-build/pause" "$ROOT/images/pause/pause.c"
      install -D -m 0755 "$WORK/pause-build/pause" "$rootfs/pause"
      pack pause podtrace.test/pause:1 "$rootfs" 65535:65535 /pause "podtrace test pause"
      ;;
    workload)
      install -D -m 0755 /bin/busybox "$rootfs/bin/busybox"
      ! ldd /bin/busybox >/dev/null 2>&1 || {
        echo "error: /bin/busybox is not static: install busybox-static (make setup)" >&2; exit 1; }
      for applet in $(/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
      done
      pack workload podtrace.test/workload:1 "$rootfs" 0:0 /bin/sh "podtrace test workload"
      ;;
    prometheus | prometheus-operator | prometheus-config-reloader)
      tools="$ROOT/e2e/scripts/build-tools.sh"
      bash "$tools" >&2
      copy_with_libs "$(bash "$tools" bin "$n")" "$rootfs" "/bin/$n"
      install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
      tag=$(bash "$tools" bin version)
      [[ $n == prometheus ]] && tag=$(bash "$tools" bin prometheus-version)
      pack "$n" "podtrace.test/$n:$tag" "$rootfs" 65534:65534 "/bin/$n" "$n"
      ;;
  esac
done
