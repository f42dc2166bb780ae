# dockyard-base/go:<1.19|1.24>: Debian's golang-go. GOTOOLCHAIN=local: a go.mod asking for a
# newer Go fails clearly instead of trying to download a toolchain (Go >= 1.21).
ARG BASE
FROM ${BASE}
ARG SUITE
ARG DEBIAN_FRONTEND=noninteractive
# The version label is added after the build, from what go in this image reports.
LABEL dockyard.runtime=go dockyard.runtime.suite=${SUITE} dockyard.runtime.version=""
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends golang-go \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log /root/.cache
ENV GOTOOLCHAIN=local
CMD ["bash"]
