# shellcheck shell=bash
# Runtime images: `docker build` of scripts/images/Dockerfile.<runtime> FROM a Debian base,
# then the version label from what the runtime in the built image reports.
# Sourced by scripts/build-base-images.sh after lib.sh; works in $WORK.

# The contract with the builder: image dockyard-base/<runtime>:<tag>, labelled
# dockyard.runtime=<runtime>, dockyard.runtime.version=<what the runtime reports>,
# dockyard.runtime.suite=<suite>. The tag is fixed here (so a missing image can be found
# without building it); the build fails if the suite's runtime no longer matches it.
# Longest builds first: they start first when jobs run in parallel.
#           runtime tag   suite
# shellcheck disable=SC2034  # used by scripts/build-base-images.sh
RUNTIMES=("node    18    bookworm"
          "node    20    trixie"
          "java    17    bookworm"
          "go      1.19  bookworm"
          "go      1.24  trixie"
          "php     8.2   bookworm"
          "python  3.13  trixie"
          "python  3.11  bookworm"
          "ruby    3.1   bookworm")

# runtime_version RUNTIME IMAGE: the runtime's own full version, run inside IMAGE.
runtime_version() {
    local cmd
    case $1 in
        python) cmd='python3 -c "import platform; print(platform.python_version())"' ;;
        node) cmd='node -p process.versions.node' ;;
        go) cmd='go env GOVERSION | sed "s/^go//"' ;;
        ruby) cmd='ruby -e "puts RUBY_VERSION"' ;;
        php) cmd='php -r "echo PHP_MAJOR_VERSION, \".\", PHP_MINOR_VERSION, \".\", PHP_RELEASE_VERSION, PHP_EOL;"' ;;
        java) cmd='java -XshowSettings:properties -version 2>&1 | sed -n "s/^ *java\.version = //p"' ;;
        *) die "unknown runtime '$1'" ;;
    esac
    docker run --rm --network none --entrypoint /bin/sh "$2" -c "$cmd" | tr -d '\r' | head -n1
}

# build_runtime RUNTIME TAG SUITE: build dockyard-base/RUNTIME:TAG from dockyard-base/debian:SUITE.
# The image gets its name only once it is complete, with all three labels.
build_runtime() {
    local runtime=$1 tag=$2 suite=$3
    local image="dockyard-base/$runtime:$tag" base="dockyard-base/debian:$suite"
    local iidfile id version
    have_image "$base" || die "$image: base image $base is missing"
    iidfile="$WORK/$runtime-$tag.iid"
    echo "== docker build $image from $base"
    DOCKER_BUILDKIT=0 docker build --force-rm --iidfile "$iidfile" \
        --build-arg "BASE=$base" --build-arg "SUITE=$suite" \
        -f "$IMAGES_DIR/Dockerfile.$runtime" "$IMAGES_DIR" </dev/null
    id=$(cat "$iidfile")
    [ -n "$id" ] || die "$image: docker build gave no image id"
    version=$(runtime_version "$runtime" "$id")
    [ -n "$version" ] || die "$image: $runtime does not run in the built image"
    case $version in
        "$tag" | "$tag".*) ;;
        *) die "$image: $suite's $runtime is $version, not $tag.*: update RUNTIMES in scripts/images/runtimes.sh" ;;
    esac
    echo "== $runtime reports $version; labelling $image"
    printf 'FROM %s\n' "$id" | DOCKER_BUILDKIT=0 docker build \
        --label "dockyard.runtime=$runtime" \
        --label "dockyard.runtime.version=$version" \
        --label "dockyard.runtime.suite=$suite" \
        -t "$image" -
}
