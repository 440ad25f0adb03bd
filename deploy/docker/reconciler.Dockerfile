# dpdk-reconciler image (Deployment dpdk-controller). Build from the workspace root:
#   docker build -f deploy/docker/reconciler.Dockerfile -t ghcr.io/dpdk-gitops/dpdk-reconciler:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p dpdk-reconciler && cp target/release/dpdk-reconciler /dpdk-reconciler

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 git && rm -rf /var/lib/apt/lists/*
COPY --from=build /dpdk-reconciler /usr/local/bin/dpdk-reconciler
# Non-root: the reconciler needs no privileges, only its repo cache.
RUN mkdir -p /var/cache/dpdk-reconciler && chown 65532:65532 /var/cache/dpdk-reconciler
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dpdk-reconciler"]
CMD ["run"]
