#!/usr/bin/env bash
# Builds the demo web server image as a `docker save` archive from Debian's
# busybox-static, with no Docker daemon and no registry:
#   cluster/demo-image/build.sh OUT.tar [TAG]      (default TAG: tutum/tomcat:latest)
# The container listens on 8080 (as Tomcat does) and serves a page naming
# its pod, so a request shows which pod answered.
set -euo pipefail
out=${1:?usage: build.sh OUT.tar [TAG]}
tag=${2:-tutum/tomcat:latest}
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "build.sh: needs a statically linked busybox (apt-get install busybox-static)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/www" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh httpd hostname cat echo sleep ls env wget nc seq test [ true false; do
  ln -s busybox "$root/bin/$applet"
done
cat > "$root/bin/serve" <<'SH'
#!/bin/sh
# Writes the page, then serves it in the foreground.
host=$(hostname)
printf '<html><body><h1>Hello from kctl</h1><p>pod %s</p></body></html>\n' "$host" > /www/index.html
printf '%s\n' "$host" > /www/hostname
echo "pod $host serving on :${PORT:-8080}"
# -v: one line per request on stderr, for `kctl logs`.
exec httpd -f -v -p "${PORT:-8080}" -h /www
SH
chmod 755 "$root/bin/serve"
# Deterministic layer: fixed owner, times and order.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2014-11-01 00:00Z' \
  -C "$root" -cf "$work/layer.tar" .
layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
config=$(printf '{"architecture":"amd64","os":"linux","created":"2014-11-01T00:00:00Z","config":{"Cmd":["/bin/serve"],"ExposedPorts":{"8080/tcp":{}},"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer_sha")
config_sha=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
mkdir -p "$work/image/$layer_sha"
mv "$work/layer.tar" "$work/image/$layer_sha/layer.tar"
printf '%s' "$config" > "$work/image/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
  "$config_sha" "$tag" "$layer_sha" > "$work/image/manifest.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2014-11-01 00:00Z' \
  -C "$work/image" -cf "$out" manifest.json "$config_sha.json" "$layer_sha/layer.tar"
echo "built $tag into $out"
