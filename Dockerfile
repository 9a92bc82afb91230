# syntax=docker/dockerfile:1.7
#
# One Dockerfile for every Switchyard service image:
#
#   docker build --build-arg SERVICE=posts -t switchyard/posts .
#
# SERVICE is a service of the app registry (`switchyard services` lists them).
# Every service runs the same `switchyard` binary; SERVICE only selects what
# `switchyard serve` starts. SERVICE is declared in the last stages only, so the
# dependency and build layers below are shared by all six images: building the
# second image reuses the first one's compiled binary from the cache.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG CARGO_CHEF_VERSION=0.1.78

# --- toolchain + cargo-chef ---------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /src

# --- dependency recipe (changes only when manifests or Cargo.lock change) -----
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build ----------------------------------------------------------------------
FROM chef AS builder
# sqlx query macros must not need a live database at build time.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is cached until the recipe changes.
RUN cargo chef cook --release --locked --package switchyard --recipe-path recipe.json
# Then the workspace sources.
COPY . .
RUN cargo build --release --locked --package switchyard \
    && install -D -m 0755 target/release/switchyard /out/switchyard \
    && install -d -m 0755 /out/data

# --- reject a missing or unknown SERVICE early --------------------------------
# The app registry compiled into the binary is the list of services: no second list here.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS service
ARG SERVICE
COPY --from=builder /out/switchyard /usr/local/bin/switchyard
RUN test -n "${SERVICE}" || { echo "build arg SERVICE is required (switchyard services lists them)" >&2; exit 1; } \
    && /usr/local/bin/switchyard services --check "${SERVICE}" \
    && printf '%s\n' "${SERVICE}" > /service

# --- runtime: distroless, no shell, non-root -----------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="switchyard-${SERVICE}" \
      org.opencontainers.image.description="Switchyard service: ${SERVICE}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=service /service /etc/switchyard/service
COPY --from=builder /out/switchyard /usr/local/bin/switchyard
# Default DATA_DIR (SQLite files). Kubernetes mounts a volume here; the root
# filesystem itself can stay read-only.
COPY --from=builder --chown=65532:65532 /out/data /data
ENV SWITCHYARD_SERVICE=${SERVICE} \
    HOST=0.0.0.0 \
    DATA_DIR=/data \
    LOG_FORMAT=json \
    RUST_LOG=info
# Numeric user so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /data
# No shell or curl in the image: the binary checks http://127.0.0.1:$OPS_PORT/healthz itself
# (without OPS_PORT, the ops port the app registry gives SWITCHYARD_SERVICE).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/switchyard", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve"]
