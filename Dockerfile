# ---- build stage -----------------------------------------------------------
FROM rust:1-bookworm AS builder

# libpq for diesel's postgres backend (SQLite is bundled and needs nothing).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Only what the workspace build needs; migrations are embedded at compile time
# from core/../migrations, so they must be in the context.
COPY Cargo.toml Cargo.lock ./
COPY core ./core
COPY server ./server
COPY worker ./worker
COPY cli ./cli
COPY bench ./bench
COPY migrations ./migrations

# Same release build as CI; --locked fails if Cargo.lock is out of date.
RUN cargo build --release --locked -p switch-server -p switch-worker -p switch-cli

# ---- runtime stage ---------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 switch \
 && useradd --system --uid 10001 --gid switch --home-dir /app --shell /usr/sbin/nologin switch \
 && mkdir -p /app \
 && chown switch:switch /app

COPY --from=builder \
     /build/target/release/switch-server \
     /build/target/release/switch-seed \
     /build/target/release/switch-worker \
     /build/target/release/switch \
     /usr/local/bin/

# /app is writable by the service user: a .env file may be mounted here, and
# the default sqlite://switch.db lands here when no SWITCH_DATABASE_URL is set.
WORKDIR /app
USER switch

# 8080: switch-server API (SWITCH_SERVER_ADDR); 9090: switch-worker /health and
# /metrics (SWITCH_WORKER_METRICS_ADDR).
EXPOSE 8080 9090

CMD ["switch-server"]
