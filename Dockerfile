# openraft-memory container image.
#
#   docker build -t openraft-memory .                      # builds from source (needs internet)
#   docker build --target prebuilt -t openraft-memory -f Dockerfile DIR
#       # from a static binary: DIR holds only `openraft-memory`; nothing is pulled
#
# The runtime is `scratch`: one static binary, no shell, no libc, numeric non-root user.
# Stages come in this order so that even the classic builder (no BuildKit) builds only
# `base` and `prebuilt` for `--target prebuilt`.

# ---- base: the runtime's metadata, shared by both ways of getting the binary ---------------
FROM scratch AS base
LABEL org.opencontainers.image.title="openraft-memory" \
      org.opencontainers.image.description="A Raft-replicated store of student records" \
      org.opencontainers.image.source="https://github.com/openraft-memory/openraft-memory" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# The peer port stays on loopback: a lone container needs no peers, and a node refuses a
# reachable peer port without peer TLS (or tls.peer.insecure). The compose file and the
# Helm chart set OPENRAFT_MEMORY__RAFT__ADDR=0.0.0.0:50052 together with TLS.
ENV OPENRAFT_MEMORY__HTTP__ADDR=0.0.0.0:8080 \
    OPENRAFT_MEMORY__GRPC__ADDR=0.0.0.0:50051
EXPOSE 8080 50051 50052
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s CMD ["/openraft-memory", "probe", "ready"]
ENTRYPOINT ["/openraft-memory"]
CMD ["serve"]

# ---- runtime from an already built static binary (the build context holds it) --------------
# What CI and air-gapped hosts use: no base image is pulled.
FROM base AS prebuilt
COPY openraft-memory /openraft-memory

# ---- builder: for users with internet access ---------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# A fully static binary: glibc's static build would fall back to /dev/urandom (absent in
# scratch) without the getrandom backend flag.
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked --target "$target" \
 && cp "target/$target/release/openraft-memory" /openraft-memory \
 && strip --strip-debug /openraft-memory

# ---- runtime, from the builder (the default target) -----------------------------------------
FROM base AS runtime
COPY --from=builder /openraft-memory /openraft-memory
