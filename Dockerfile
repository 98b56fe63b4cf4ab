# camunda-worker container image.
#
#   docker build -t camunda-worker:latest .
#   docker run --rm -e CAMUNDA_WORKER_ENGINE_URL=http://camunda:8080/engine-rest camunda-worker:latest
#
# Stage 1 compiles the release binary; stage 2 is distroless (glibc + libgcc, CA certificates, no
# shell, no package manager) and runs it as the unprivileged user 65532. reqwest is built with rustls,
# so no OpenSSL is needed at run time.
#
# TLS trusts the system's certificate store, the Mozilla roots built into the binary, and --ca-cert.
# The store is read where OpenSSL would look: the bundle /etc/ssl/certs/ca-certificates.crt and every
# PEM file in /etc/ssl/certs (or only SSL_CERT_FILE / SSL_CERT_DIR when either is set). To trust a
# corporate CA, mount its PEM into /etc/ssl/certs (e.g. a ConfigMap key with subPath
# /etc/ssl/certs/corporate-ca.pem) or pass it with --ca-cert; no rebuild, no update-ca-certificates.

# Same minor version as the toolchain that wrote Cargo.lock; Debian 12 like the runtime image, so the
# binary links against the same glibc it runs with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# 1. Dependencies only: build the locked dependency graph against stub targets, so this layer is
#    reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && printf '//! stub\n' > src/lib.rs \
    && printf '//! stub\nfn main() {}\n' > src/main.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The crate itself. The BPMN model is embedded with include_str!, so bpmn/ is a build input.
COPY src ./src
COPY bpmn ./bpmn
# Remove the stub's own artifacts so cargo rebuilds the crate even if the copied sources carry
# timestamps older than the stub build.
RUN rm -rf target/release/.fingerprint/camunda-worker-* \
           target/release/deps/camunda_worker-* \
           target/release/deps/libcamunda_worker-* \
           target/release/camunda-worker \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/camunda-worker /out/camunda-worker \
    && /out/camunda-worker --help > /dev/null

FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="camunda-worker" \
      org.opencontainers.image.description="Camunda 7 external-task worker: completes messageSending tasks and correlates the follow-up message" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/camunda-worker /usr/local/bin/camunda-worker

# Inside a container the metrics/health endpoints must be reachable from outside the container.
ENV CAMUNDA_WORKER_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464

# Numeric user so Kubernetes' runAsNonRoot can verify it (distroless "nonroot" = 65532).
USER 65532:65532

# The image has no curl or shell: the binary probes its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/camunda-worker", "healthcheck"]

# SIGTERM (the default stop signal) starts the graceful shutdown (--shutdown-grace, 25s by default);
# give `docker stop` / Kubernetes more than that before SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/camunda-worker"]
