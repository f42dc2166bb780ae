# dockyard-base/php:8.2: Debian's php-cli (has the built-in server, `php -S`) and composer,
# with the curl and zip extensions composer uses to fetch and unpack packages.
ARG BASE
FROM ${BASE}
ARG SUITE
ARG DEBIAN_FRONTEND=noninteractive
# The version label is added after the build, from what php in this image reports.
LABEL dockyard.runtime=php dockyard.runtime.suite=${SUITE} dockyard.runtime.version=""
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends php-cli php-curl php-zip composer \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log /root/.cache
# The image runs as root (the builder runs composer as root).
ENV COMPOSER_ALLOW_SUPERUSER=1
CMD ["bash"]
