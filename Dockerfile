# syntax=docker/dockerfile:1
# cce-cni-guard: one static binary on an empty base. Build: docker build -t cce-cni-guard .
# The build stage links against musl so the final stage needs no libc at all.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
# musl-tools: ring compiles its C and assembly with musl-gcc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "${TARGET}"
WORKDIR /src
# .dockerignore admits only the manifest, the lock file and the Rust sources.
COPY . .
# Without the default `sim` feature: the simulated cluster is test equipment, not shipped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --target "${TARGET}" --bin cce-cni-guard \
    && cp "target/${TARGET}/release/cce-cni-guard" /cce-cni-guard

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cce-cni-guard" \
      org.opencontainers.image.description="Admission guard and safe patch upgrader for the Baidu CCE v1 container network" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="cce-cni-guard"
# For the kube client when it talks to an apiserver outside the cluster (in-cluster it
# uses the ServiceAccount's CA).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /cce-cni-guard /cce-cni-guard
# Numeric, so the kubelet can enforce runAsNonRoot without a passwd file.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/cce-cni-guard"]
CMD ["serve"]
