# dockyard-base/java:17: Debian's OpenJDK 17 (JDK, headless) and Maven, with the Maven
# plugins of the default jar lifecycle from Debian's packages, so that `mvn -B -o package`
# builds offline (see java/settings.xml for what a pom may name).
ARG BASE
FROM ${BASE}
ARG SUITE
ARG DEBIAN_FRONTEND=noninteractive
# The version label is added after the build, from what java in this image reports.
LABEL dockyard.runtime=java dockyard.runtime.suite=${SUITE} dockyard.runtime.version=""
COPY java/settings.xml java/plexus-utils-1.1.pom /tmp/dockyard-java/
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven \
        libmaven-clean-plugin-java libmaven-resources-plugin-java \
        libmaven-compiler-plugin-java libsurefire-java libmaven-jar-plugin-java \
        libmaven-install-plugin-java \
 && install -m 0644 /tmp/dockyard-java/settings.xml /etc/maven/settings.xml \
 && repo=/usr/share/maven-repo/org/codehaus/plexus/plexus-utils \
 && test -e "$repo/debian/plexus-utils-debian.jar" \
 && mkdir -p "$repo/1.1" \
 && install -m 0644 /tmp/dockyard-java/plexus-utils-1.1.pom "$repo/1.1/" \
 && ln -s ../debian/plexus-utils-debian.jar "$repo/1.1/plexus-utils-1.1.jar" \
 && rm -rf /tmp/dockyard-java \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log /root/.cache
CMD ["bash"]
