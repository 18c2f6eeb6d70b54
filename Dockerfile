# Multi-stage build: compile in the Rust image, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY proto ./proto
COPY bench ./bench
COPY assets ./assets
COPY config ./config
RUN cargo build --release --locked --bin livegate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 livegate
COPY --from=build /src/target/release/livegate /usr/local/bin/livegate
COPY config/livegate.toml /etc/livegate/livegate.toml
USER livegate
EXPOSE 1935 8080
ENTRYPOINT ["/usr/local/bin/livegate"]
CMD ["--config", "/etc/livegate/livegate.toml"]
