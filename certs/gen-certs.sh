#!/usr/bin/env sh
# Makes a CA and a serving certificate for the cce-cni-guard webhook with openssl, for those
# who do not run the cce-cni-guard binary (it does the same with `cce-cni-guard certs`).
#
#   certs/gen-certs.sh [--service cce-cni-guard] [--namespace cce-cni-guard] [--out DIR]
#                      [--days 365] [--ca-days 3650] [--force]
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt, DIR/tls.key (keys mode 0600) and prints the
# caBundle (base64 of ca.crt, one line) on stdout; what to do next goes to stderr.
# Keep ca.key offline: it is needed only to sign the next serving certificate.
set -eu

service=cce-cni-guard
namespace=cce-cni-guard
out=./cce-cni-guard-certs
days=365
ca_days=3650
force=no

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --service) service=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --ca-days) ca_days=$2; shift 2 ;;
    --force) force=yes; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done

command -v openssl >/dev/null 2>&1 || { echo "error: openssl is not installed" >&2; exit 1; }
case "$service$namespace" in
  *[!a-z0-9-]*) echo "error: service and namespace must be DNS labels (a-z, 0-9, -)" >&2; exit 2 ;;
esac

mkdir -p "$out"
for f in ca.crt ca.key tls.crt tls.key; do
  if [ -e "$out/$f" ] && [ "$force" != yes ]; then
    echo "error: $out/$f already exists (pass --force to overwrite)" >&2
    exit 1
  fi
done

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = cce-cni-guard webhook CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

cat > "$work/tls.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $service.$namespace.svc
[v3_tls]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:$service, DNS:$service.$namespace, DNS:$service.$namespace.svc, DNS:$service.$namespace.svc.cluster.local
authorityKeyIdentifier = keyid
CNF

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key.sec1"
openssl pkcs8 -topk8 -nocrypt -in "$work/ca.key.sec1" -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$ca_days" \
  -config "$work/ca.cnf" -out "$work/ca.crt"

openssl ecparam -name prime256v1 -genkey -noout -out "$work/tls.key.sec1"
openssl pkcs8 -topk8 -nocrypt -in "$work/tls.key.sec1" -out "$work/tls.key"
openssl req -new -key "$work/tls.key" -config "$work/tls.cnf" -out "$work/tls.csr"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$days" \
  -extfile "$work/tls.cnf" -extensions v3_tls -out "$work/tls.crt" 2>/dev/null

openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null

for f in ca.crt ca.key tls.crt tls.key; do
  cp "$work/$f" "$out/$f"
done
chmod 0600 "$out/ca.key" "$out/tls.key"
chmod 0644 "$out/ca.crt" "$out/tls.crt"

ca_bundle=$(base64 < "$out/ca.crt" | tr -d '\n')
echo "$ca_bundle"
cat >&2 <<NOTE
wrote $out/ca.crt, $out/ca.key, $out/tls.crt, $out/tls.key ($service.$namespace.svc, $days days)
next:
  kubectl create namespace $namespace
  kubectl -n $namespace create secret generic $service-tls --type=kubernetes.io/tls \\
    --from-file=ca.crt=$out/ca.crt --from-file=tls.crt=$out/tls.crt --from-file=tls.key=$out/tls.key
  helm install cce-cni-guard charts/cce-cni-guard -n $namespace \\
    --set certs.mode=existingSecret --set certs.existingSecret.name=$service-tls \\
    --set certs.existingSecret.caBundle=\$(base64 < $out/ca.crt | tr -d '\\n')
NOTE
