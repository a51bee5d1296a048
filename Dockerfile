# syntax=docker/dockerfile:1
# The project's GPU image: `docker build -t xtask:latest .` (docs/containers.md). BuildKit (Docker's
# default builder since 23.0) is needed for the pip cache mount below.
#
# Base: NVIDIA's CUDA 13.0 *base* image, pinned by tag. The torch 2.14.1 wheel that requirements.txt pins
# is built for CUDA 13.0 and brings its own CUDA runtime, cuDNN 9 and NCCL as pip packages, so a
# cudnn-runtime image would carry a second, unused copy (gigabytes) whose versions could disagree with
# the wheel's. What the image needs from NVIDIA is what the base image sets for the NVIDIA Container
# Toolkit: NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, and NVIDIA_REQUIRE_CUDA=cuda>=13.0, which
# makes `docker run --gpus` refuse a too-old host driver with a clear message instead of failing at
# the first kernel. The official pytorch/pytorch images ship their own torch build, which would not be
# the pinned wheel the rest of the project runs.
# BASE is a build argument so that the same file builds on a stand-in base where NVIDIA's registry is
# out of reach: `make image-test` (docs/containers.md) builds it on a Debian 12 base made locally.
ARG BASE=nvidia/cuda:13.0.2-base-ubuntu22.04
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    XTASK_IN_CONTAINER=1 \
    USER=xtask \
    DVC_SITE_CACHE_DIR=/workspace/.dvc/tmp/site-cache
# USER: the container routes run as the caller's uid, which has no passwd entry here, and DVC names its
# site cache after getpass.getuser(), which then raises KeyError ("unexpected error - getpwuid(): uid
# not found"). DVC_SITE_CACHE_DIR: DVC's state (the hashes of tracked files by inode and mtime) and its
# data index live there; the default, /var/tmp/dvc, is in the container and gone with `--rm`, so each
# run would hash every tracked file again (gigabytes for Cityscapes). Under .dvc/tmp it is in the
# mounted repository, kept between runs, written as the caller, and already ignored by git and by
# .dockerignore; a fixed USER keeps DVC's per-repository folder in it the same from run to run.

# Where Python 3.11 comes from: the pins are tested with a final 3.11 release, and Ubuntu 22.04 (the
# default base) packages only 3.11.0rc1 (jammy-updates), so PYTHON=deadsnakes (the default) adds the
# deadsnakes PPA, the usual source of final CPython releases for Ubuntu LTS, whose python3.11 then wins
# over the release candidate by version. PYTHON=distro takes the base's own python3.11, for a base
# whose release packages a final one (Debian 12: 3.11.2, the stand-in base of `make image-test`).
# software-properties-common only adds the PPA (add-apt-repository fetches its signing key from
# Launchpad) and goes again with what it pulled in.
ARG PYTHON=deadsnakes

# Apt packages follow the base image's release rather than exact versions, which the archive drops as
# it updates (a pinned version would break the build, not reproduce it). The system git config trusts
# every repository: a mounted one belongs to the caller's uid, which need not be the uid git runs as
# here (git would refuse it as "dubious ownership", and DVC with it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && case "$PYTHON" in \
        distro) ;; \
        deadsnakes) apt-get install -y --no-install-recommends software-properties-common gpg-agent \
            && add-apt-repository --yes ppa:deadsnakes/ppa ;; \
        *) echo "PYTHON=$PYTHON: expected deadsnakes (the default base) or distro" >&2; exit 1 ;; \
    esac \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && if [ "$PYTHON" = deadsnakes ]; then \
        apt-get purge -y --auto-remove software-properties-common gpg-agent; fi \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'

# Stop here, in one line, unless python3.11 is a final 3.11 release (not the release candidate a base's
# archive may hold): the pins and the committed metrics were made with one.
COPY docker/check_python.py /usr/local/lib/xtask/check_python.py
RUN python3.11 /usr/local/lib/xtask/check_python.py

# The pinned dependencies, in their own layer before the code: editing the code reuses this layer.
# pip's cache is a BuildKit cache mount, outside the image, so a changed pin downloads only itself
# rather than the gigabytes of torch and its CUDA wheels again.
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.11 -m venv "$VIRTUAL_ENV" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --chmod=755 docker/xtask-repro /usr/local/bin/xtask-repro

# A non-root default user; `docker run --user "$(id -u):$(id -g)"` (compose.yaml, launch.where: docker)
# runs as the caller instead, so files written into the mounted repository are the caller's.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash xtask
USER 1000:1000
WORKDIR /workspace

# The code, for a self-contained image; the container route mounts the repository over it.
COPY --chown=1000:1000 . /workspace

# DVC needs a git repository, and .dockerignore keeps the checkout's .git (its whole history) out, so
# the copy becomes a repository of its own, one commit as uid 1000, and `docker run --gpus all
# xtask:latest` alone reproduces the default (the embedded synthetic dataset) in the container. Printing
# "mount your checkout" instead would leave the image unable to check itself. The identity is given
# to this one commit only, so nothing in the image pretends to be the user's.
RUN git init --quiet --initial-branch=main \
    && git add --all \
    && git -c user.name=xtask-image -c user.email=xtask-image@localhost commit --quiet \
        -m "The code the image was built from"

# xtask-repro is `dvc repro` with arguments passed on, which first checks the mounted /workspace
# and stops with one line naming what to mount when DVC could not work there.
CMD ["xtask-repro"]
