# dpdk-node-agent image (DaemonSets dpdk-driver-loader and sriov-device-plugin). Build from the workspace root:
#   docker build -f deploy/docker/node-agent.Dockerfile -t ghcr.io/dpdk-gitops/dpdk-node-agent:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dpdk-node-agent && cp target/release/dpdk-node-agent /dpdk-node-agent

FROM debian:bookworm-slim
# kmod provides modprobe for loading vfio/vfio-pci against the host's /lib/modules.
RUN apt-get update && apt-get install -y --no-install-recommends kmod ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /dpdk-node-agent /usr/local/bin/dpdk-node-agent
# Runs as root: the driver loader and monitor need CAP_SYS_MODULE and sysfs writes
# (privileged in the DaemonSet); the device plugin drops every capability.
ENTRYPOINT ["/usr/local/bin/dpdk-node-agent"]
