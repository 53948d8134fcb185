# syntax=docker/dockerfile:1
# tailgate container image.
#
#   docker build -t tailgate .
#   docker run --rm -p 9464:9464 -e TAILGATE__KAFKA__BROKERS=kafka:9092 tailgate run --env production
#
# The build runs the same command as a local release build,
# `cargo build --release --locked`; librdkafka is compiled from source by the
# rdkafka crate with make, gcc, perl and python3, all in the rust image (no
# cmake needed). The runtime image is debian:bookworm-slim with the binary, the
# policy files in /etc/tailgate/policies and a non-root user.
# See docs/operations.md#container-image.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target/ between builds (BuildKit).
# The binary is copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/tailgate /out/tailgate \
    # The release profile keeps line tables (debug = 1) for profiling; the
    # image keeps the symbols (readable backtraces) but not the debug info.
    && strip --strip-debug /out/tailgate \
    && /out/tailgate --version

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates for TLS to the brokers and libssl3, the OpenSSL librdkafka
# is built against (rdkafka's `ssl` feature; the rust image has libssl-dev);
# besides, the binary needs only libc, libgcc and zlib, which the base image has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 tailgate \
    && useradd --system --uid 10001 --gid tailgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tailgate
COPY --from=build /out/tailgate /usr/local/bin/tailgate
# The repository's policy files; mount a directory (or a ConfigMap) over
# /etc/tailgate/policies to run others, and pass an extra settings file with
# `--config`. `tailgate run` reads these two variables.
COPY policies/ /etc/tailgate/policies/
ENV TAILGATE_POLICIES=/etc/tailgate/policies \
    TAILGATE_ENV=default
# /metrics, /healthz, /readyz (settings metrics.listen, default 0.0.0.0:9464).
EXPOSE 9464
USER 10001:10001
ENTRYPOINT ["tailgate"]
CMD ["run"]
