# vllm-autoscaler container image: built on Debian 12 (debian:bookworm), run on debian:bookworm-slim
# as the numeric non-root user 65532:65532, entrypoint /usr/local/bin/vllm-autoscaler. What it
# holds, its size and start time, and how to load it: docs/image.md.
#
#   sudo ./scripts/build-image   # no registry or Docker needed: both base images made locally with
#                                # debootstrap, built with buildah as vllm-autoscaler:<version> and
#                                # :latest, written to build/image/vllm-autoscaler-<version>.oci.tar
#   docker build -t vllm-autoscaler:0.1.0 .   # or with Docker (base images from Docker Hub)
#
#   docker run --rm -p 8080:8080 -p 8081:8081 --read-only \
#     -v "$PWD/config.yaml:/etc/vllm-autoscaler/config.yaml:ro" \
#     vllm-autoscaler:0.1.0 --config /etc/vllm-autoscaler/config.yaml
#
# In Kubernetes: deploy/kubernetes (docs/kubernetes.md), which mounts the config at that same path.
# Only the files the build needs are copied in (no local build/ directory, whose CMake cache names
# another source path, and no test, bench or fuzz tree); .dockerignore keeps everything else out of
# the build context.

# ---- build --------------------------------------------------------------------------------------
FROM debian:bookworm AS build
WORKDIR /src
# Only the compiler, CMake, Ninja and the libraries CMakeLists.txt finds (`scripts/setup
# --build-only`), in a layer of its own: with a layer cache (Docker's, or `buildah bud --layers`) a
# source change does not reinstall them.
COPY scripts/setup scripts/setup
RUN ./scripts/setup --build-only && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt CMakePresets.json ./
COPY src/ src/
# Without the tests, fuzz targets and benchmark floors, whose trees are not copied in.
RUN cmake --preset release -DVA_TESTS=OFF -DVA_BENCH=OFF \
 && cmake --build --preset release --target vllm-autoscaler \
 && strip build/release/bin/vllm-autoscaler

# ---- runtime ------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# Exactly the shared libraries `ldd build/release/bin/vllm-autoscaler` lists beyond libc, libm,
# libstdc++ and libgcc_s (already in the slim image): yaml-cpp, spdlog, fmt, OpenSSL's libssl and
# libcrypto. ca-certificates for HTTPS to a Kubernetes API signed by a public CA.
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libyaml-cpp0.7 libspdlog1.10 libfmt9 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/release/bin/vllm-autoscaler /usr/local/bin/vllm-autoscaler
# Fail the image build if a runtime library is missing.
RUN ! ldd /usr/local/bin/vllm-autoscaler | grep 'not found' \
 && /usr/local/bin/vllm-autoscaler --version
# A numeric non-root user (the Deployment sets runAsNonRoot, which needs a numeric UID to check).
USER 65532:65532
# 8080: the public OpenAI-compatible port; 8081: admin (/healthz /readyz /metrics /status /admin/*).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/vllm-autoscaler"]
