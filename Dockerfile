# vllm-autoscaler container image: built on Debian 12, run on debian:bookworm-slim as a non-root user.
#
#   docker build -t vllm-autoscaler:latest .
#   docker run --rm -p 8080:8080 -p 8081:8081 -v "$PWD/examples:/etc/vllm-autoscaler:ro" \
#     vllm-autoscaler:latest --config /etc/vllm-autoscaler/your-config.yaml
#
# In Kubernetes: deploy/kubernetes (docs/kubernetes.md). Only the files the build needs are copied
# (no local build/ directory, whose CMake cache names another source path, and no test tree).

# ---- build --------------------------------------------------------------------------------------
FROM debian:bookworm AS build
WORKDIR /src
# The project's own setup installs the toolchain and libraries from Debian's packages (and Node.js,
# which only the end-to-end tests use). It runs in a layer of its own, so a source change does not
# reinstall them. Configured with VA_TESTS=OFF: the test tree is not copied in.
COPY scripts/setup scripts/setup
RUN ./scripts/setup && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt CMakePresets.json ./
COPY src/ src/
RUN cmake --preset release -DVA_TESTS=OFF \
 && cmake --build --preset release --target vllm-autoscaler \
 && strip build/release/bin/vllm-autoscaler

# ---- runtime ------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# Exactly the shared libraries `ldd build/release/bin/vllm-autoscaler` lists beyond libc, libm,
# libstdc++ and libgcc_s (already in the slim image): yaml-cpp, spdlog, fmt, OpenSSL's libcrypto.
# ca-certificates for HTTPS to a Kubernetes API signed by a public CA.
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
