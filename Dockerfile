# syntax=docker/dockerfile:1
#
# The runner image for the Fargate task. The runner is built on Amazon Linux 2023 and
# runs on Amazon Linux 2023: the userland of Lambda's provided.al2023 runtime, so any
# bootstrap (and any layer) that runs in Lambda runs here, with the same glibc.
#
#   docker build -t immortal-runner .
#   docker run --rm -e IMMORTAL_EVENT='{}' -e IMMORTAL_CONTEXT='{"invoked_function_arn":"..."}' immortal-runner

ARG AL2023=public.ecr.aws/amazonlinux/amazonlinux:2023

FROM ${AL2023} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A C toolchain for ring's build script; the Rust toolchain pinned to the one the
# workspace is tested with.
# hadolint ignore=DL3041
RUN dnf install -y --setopt=install_weak_deps=False gcc tar gzip && dnf clean all
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain 1.95.0
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p immortal-runner --bin runner \
    && install -m 0755 target/release/runner /runner

FROM ${AL2023}-minimal
# The code cache and the layers root (/opt, as in Lambda) at fixed paths the runner's
# user can write; nothing else is writable by it.
RUN mkdir -p /var/cache/immortal /opt \
    && chown 10001:10001 /var/cache/immortal /opt
COPY --from=build /runner /usr/local/bin/runner
ENV IMMORTAL_CACHE_DIR=/var/cache/immortal \
    IMMORTAL_OPT_DIR=/opt
# Never root: the runner, and the bootstrap it starts, run as this unprivileged user.
USER 10001:10001
WORKDIR /var/cache/immortal
ENTRYPOINT ["/usr/local/bin/runner"]
