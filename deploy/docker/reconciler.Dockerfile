# dpdk-reconciler image (Deployment dpdk-controller): a prebuilt static binary on scratch,
# nothing to pull. The build context (assembled by `dpdk-testenv images` here and by
# .github/workflows/release.yml) holds:
#   rootfs/etc/{passwd,group,nsswitch.conf}      deploy/docker/rootfs/
#   rootfs/etc/ssl/certs/ca-certificates.crt     the build host's CA bundle
#   bin/<TARGETARCH>/dpdk-reconciler             static executable (glibc +crt-static)
# Build: buildah build --isolation chroot -f deploy/docker/reconciler.Dockerfile \
#          --build-arg VERSION=... --build-arg REVISION=... --build-arg TARGETARCH=amd64 <context>
#    or: docker buildx build --platform linux/amd64,linux/arm64 -f deploy/docker/reconciler.Dockerfile ... <context>
FROM scratch
ARG TARGETARCH
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="dpdk-reconciler" \
      org.opencontainers.image.description="dpdk-gitops reconciler: Git sources, the DPDK controller, drift report" \
      org.opencontainers.image.source="https://github.com/dpdk-gitops/dpdk-gitops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY rootfs/ /
COPY bin/${TARGETARCH}/dpdk-reconciler /usr/local/bin/dpdk-reconciler
# libgit2's OpenSSL and the Kubernetes client's rustls read the bundle from here.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Non-root (the Deployment's runAsUser): the reconciler needs no privileges, only its repo
# cache and /tmp, which the Deployment mounts as emptyDirs on a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dpdk-reconciler"]
CMD ["run"]
