# raftlite's container image: raftlited and the raftlite shell on a small Debian base, run as a
# non-root user, with the data directory on a volume. README "Deploying" walks through it.
#
#   docker build --build-arg RAFTLITE_COMMIT=$(git rev-parse --short=12 HEAD) -t raftlite .
#   docker run -p 4001:4001 -v raftlite-data:/var/lib/raftlite raftlite
#
# Arguments after the image name are raftlited flags (`docker run raftlite -fk`), and RAFTLITE_*
# environment variables set any flag (`-e RAFTLITE_BOOTSTRAP_EXPECT=3`).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The build has no .git; the commit `raftlited -version` names comes in as a build argument.
ARG RAFTLITE_COMMIT=unknown
ENV RAFTLITE_COMMIT=${RAFTLITE_COMMIT}
COPY . .
RUN cargo build --release --locked --bin raftlited --bin raftlite \
    && strip target/release/raftlited target/release/raftlite

FROM debian:bookworm-slim
# curl answers the health check; ca-certificates lets auto-backup, CDC and node TLS verify
# public certificate authorities.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/raftlite --shell /usr/sbin/nologin raftlite \
    && mkdir -p /var/lib/raftlite /etc/raftlite \
    && chown raftlite:raftlite /var/lib/raftlite
COPY --from=build /src/target/release/raftlited /src/target/release/raftlite /usr/local/bin/
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER raftlite
VOLUME /var/lib/raftlite
EXPOSE 4001 4002
# Ready: this node is up and knows a leader (docs/API.md §10, /readyz).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${RAFTLITE_HTTP_PORT:-4001}/readyz" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
