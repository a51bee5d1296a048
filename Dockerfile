# The project's GPU image: `docker build -t xtask:latest .` (see README, "Containers").
#
# Base: NVIDIA's CUDA 13.0 *base* image, pinned by tag. The torch 2.14.1 wheel that requirements.txt pins
# is built for CUDA 13.0 and brings its own CUDA runtime, cuDNN 9 and NCCL as pip packages, so a
# cudnn-runtime image would carry a second, unused copy (gigabytes) whose versions could disagree with
# the wheel's. What the image needs from NVIDIA is what the base image sets for the NVIDIA Container
# Toolkit: NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, and NVIDIA_REQUIRE_CUDA=cuda>=13.0, which
# makes `docker run --gpus` refuse a too-old host driver with a clear message instead of failing at
# the first kernel. The official pytorch/pytorch images ship their own torch build, which would not be
# the pinned wheel the rest of the project runs. Ubuntu 22.04: it packages Python 3.11, the version
# the pins are tested with.
FROM nvidia/cuda:13.0.2-base-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    XTASK_IN_CONTAINER=1

# Apt packages follow the pinned base image's Ubuntu release rather than exact versions, which the
# archive drops as it updates (a pinned version would break the build, not reproduce it). The system
# git config trusts every repository: a mounted one belongs to the caller's uid, which need not be the
# uid git runs as here (git would refuse it as "dubious ownership", and DVC with it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'

# The pinned dependencies, in their own layer before the code: editing the code reuses this layer.
COPY requirements.txt /tmp/requirements.txt
RUN python3.11 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# A non-root default user; `docker run --user "$(id -u):$(id -g)"` (compose.yaml, launch.where: docker)
# runs as the caller instead, so files written into the mounted repository are the caller's.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash xtask
USER 1000:1000
WORKDIR /workspace

# The code, for a self-contained image; the container route mounts the repository over it.
COPY --chown=1000:1000 . /workspace

CMD ["dvc", "repro"]
