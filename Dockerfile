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
ENV QUICKSILVER_LISTEN=0.0.0.0:3000
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=2s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
ENTRYPOINT ["/usr/local/bin/quicksilver"]
