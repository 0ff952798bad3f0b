# Multi-stage build of the quicksilver binary: a full Rust toolchain to compile, a small Debian
# runtime (with CA certificates for rediss://) to run, as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY loadtest ./loadtest
RUN cargo build --release --locked --bin quicksilver

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home quicksilver
COPY --from=build /src/target/release/quicksilver /usr/local/bin/quicksilver
USER 10001:10001
# The hub on 3000, every interface; /metrics, /healthz and /readyz also on 9090, a listener of their
# own, so probes and scrapes do not queue behind subscribers during a reconnection storm. The
# address is given the way the reference hub's image takes it, SERVER_NAME, so that an environment
# written for that image (SERVER_NAME=:80) moves the hub too; QUICKSILVER_LISTEN wins over both.
ENV SERVER_NAME=:3000 \
    QUICKSILVER_METRICS_ADDR=0.0.0.0:9090
EXPOSE 3000 9090
# The binary probes itself: no shell, curl or /dev/tcp needed (a distroless base would do). It
# reads the two addresses above and asks GET /healthz on the metrics one; exit 0 means 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/quicksilver", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/quicksilver"]
