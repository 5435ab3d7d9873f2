# switchboard container image: built on Debian 12 with the project's own packages, run as a
# non-root user with the example configuration; state (the SQLite file) lives in /var/lib/switchboard.
#   docker build -t switchboard .
#   docker run -p 8400:8400 -e OPENAI_API_KEYS=sk-... -v sb-state:/var/lib/switchboard switchboard
# Cluster mode (Redis and PostgreSQL): examples/docker-compose.yaml.

FROM debian:12 AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libssl-dev libsqlite3-dev \
      libhiredis-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev libpq-dev \
      prometheus-cpp-dev libjemalloc-dev libgtest-dev libgmock-dev libbenchmark-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSWITCHBOARD_UNIT_TESTS=OFF \
      -DSWITCHBOARD_BENCH=OFF -DBUILD_TESTING=OFF \
 && cmake --build build --target switchboard -j"$(nproc)" \
 && cmake --install build --prefix /opt/switchboard --component runtime

FROM debian:12-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      ca-certificates curl libboost-container1.81.0 libboost-json1.81.0 libfmt9 libhiredis0.14 libjemalloc2 libpq5 \
      libprometheus-cpp-core1.0 libspdlog1.10 libsqlite3-0 libssl3 libyaml-cpp0.7 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/switchboard --shell /usr/sbin/nologin switchboard \
 && mkdir -p /var/lib/switchboard /etc/switchboard \
 && chown switchboard:switchboard /var/lib/switchboard
COPY --from=build /opt/switchboard/ /usr/local/
COPY examples/switchboard.yaml /etc/switchboard/switchboard.yaml
# Inside a container the gateway listens on every interface and keeps its state in the volume.
ENV SWITCHBOARD__LISTEN=0.0.0.0:8400 \
    SWITCHBOARD__STATE__PATH=/var/lib/switchboard/switchboard.db
USER switchboard
WORKDIR /var/lib/switchboard
VOLUME ["/var/lib/switchboard"]
EXPOSE 8400
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8400/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve", "--config", "/etc/switchboard/switchboard.yaml"]
