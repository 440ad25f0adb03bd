# dpdk-node-agent image (DaemonSets dpdk-driver-loader and sriov-device-plugin): a prebuilt
# static binary on scratch, nothing to pull. The build context is the one described in
# reconciler.Dockerfile, with bin/<TARGETARCH>/dpdk-node-agent.
# No kmod: the agent loads modules itself (finit_module) from the host's /lib/modules.
FROM scratch
ARG TARGETARCH
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="dpdk-node-agent" \
      org.opencontainers.image.description="dpdk-gitops node agent: vfio modules, vfio-pci binding, node state, kubelet device plugin" \
      org.opencontainers.image.source="https://github.com/dpdk-gitops/dpdk-gitops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY rootfs/ /
COPY bin/${TARGETARCH}/dpdk-node-agent /usr/local/bin/dpdk-node-agent
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Runs as root: the driver loader and monitor need CAP_SYS_MODULE and sysfs writes
# (privileged in the DaemonSet); the device plugin drops every capability.
USER 0:0
ENTRYPOINT ["/usr/local/bin/dpdk-node-agent"]
