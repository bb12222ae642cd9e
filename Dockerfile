# The costop image: the one `costop` binary on a distroless base, run as
# non-root. Build with scripts/image (docker, podman or buildah), or:
#
#   docker build -t costop:dev .
#
# The same image runs the server (`costop server …`) and the agent
# (`costop agent`); deploy/base gives each its arguments.

# Rust 1.95 builds the locked dependencies (the AWS SDK crates need ≥ 1.94).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The workspace only: crates/ and the two Cargo files (.dockerignore keeps
# target/ and .git out of the context).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release -p costop --locked \
    && install -m 0755 target/release/costop /costop

# glibc, libgcc and CA certificates, no shell; the :nonroot tag runs as
# uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /costop /costop
# Numeric, so that a pod's runAsNonRoot can check it (65532 is distroless'
# `nonroot`).
USER 65532:65532
ENTRYPOINT ["/costop"]
