# dockyard-base/ruby:3.1: Debian's ruby and bundler.
ARG BASE
FROM ${BASE}
ARG SUITE
ARG DEBIAN_FRONTEND=noninteractive
# The version label is added after the build, from what ruby in this image reports.
LABEL dockyard.runtime=ruby dockyard.runtime.suite=${SUITE} dockyard.runtime.version=""
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ruby bundler \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log /root/.cache
# The image runs as root (the builder runs bundler as root).
ENV BUNDLE_SILENCE_ROOT_WARNING=1
CMD ["bash"]
