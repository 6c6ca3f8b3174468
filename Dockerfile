# syntax=docker/dockerfile:1
#
# The runner images: one per runtime family, each AWS's own Lambda base image for that
# runtime (the interpreter under /var/lang, the runtime interface client and its
# bootstrap under /var/runtime, exactly the userland the function has in Lambda) plus
# one file, the runner. The runner is built once, outside any image, the way the Lambda
# zips are built (cargo-lambda's zig linker, glibc 2.26: it runs on every AWS base
# image, Amazon Linux 2 and 2023), and tested as built; scripts/build-images builds it
# and every image:
#
#   scripts/build-images                                   # all runtimes, x86_64
#   scripts/build-images --arch arm64 python3.12           # one runtime, arm64
#
# or by hand, after scripts/build-images --binaries-only:
#
#   docker build --platform linux/amd64 \
#     --build-arg BASE_IMAGE=public.ecr.aws/lambda/python:3.12 --build-arg RUNTIME=python3.12 \
#     -t immortal-runner:python3.12-x86_64 .
#
# The default (no build arguments) is the custom-runtime image, on provided:al2023.

ARG BASE_IMAGE=public.ecr.aws/lambda/provided:al2023
FROM ${BASE_IMAGE}
ARG RUNTIME=provided.al2023
# Set by BuildKit from --platform: amd64 or arm64.
ARG TARGETARCH=amd64
# The code cache, the layers root and the task root belong to the runner's user (10001);
# functions run as users of their own (20000 and up) and can read the task root and the
# layers root, not change them; the cache, which holds every function's code that ran
# in the task, is the runner's alone (0700).
# /var/task is a real folder, as in Lambda (a link would show the cache's path to
# getcwd() and in stack traces): before each function runs, the runner fills it with
# that function's code (hard links into the cache). /tmp is the task's alone (Fargate
# gives each task its own): the runner empties what a function leaves there before the
# next one runs.
RUN mkdir -p /var/cache/immortal /opt \
    && rm -rf /var/task \
    && mkdir -m 0755 /var/task \
    && chown 10001:10001 /var/cache/immortal /opt /var/task \
    && chmod 0700 /var/cache/immortal \
    && chmod 1777 /tmp
COPY --chmod=0755 target/images/${TARGETARCH}/runner /usr/local/bin/runner
# The one program that runs as root, and only to start a function as its own user
# (see sandbox/): setuid, executable by the runner's group alone.
COPY --chown=0:10001 --chmod=4750 target/images/${TARGETARCH}/immortal-sandbox /usr/local/bin/immortal-sandbox
ENV IMMORTAL_CACHE_DIR=/var/cache/immortal \
    IMMORTAL_OPT_DIR=/opt \
    IMMORTAL_RUNTIME_DIR=/var/runtime \
    IMMORTAL_IMAGE_RUNTIME=${RUNTIME} \
    IMMORTAL_TASK_ROOT=/var/task \
    IMMORTAL_SANDBOX=/usr/local/bin/immortal-sandbox \
    IMMORTAL_OWN_TMP=true \
    IMMORTAL_FUNCTION_ROLE=assume \
    IMMORTAL_FUNCTION_LOGS=cloudwatch
# Never root: the runner runs as this unprivileged user, each function as its own.
USER 10001:10001
WORKDIR /var/cache/immortal
# Takes the place of the base image's /lambda-entrypoint.sh (the emulator).
ENTRYPOINT ["/usr/local/bin/runner"]
