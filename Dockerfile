# syntax=docker/dockerfile:1
# webhook-operator image: one binary, subcommands `controller`, `dispatcher`, `crdgen`.
#   docker build -t registry.example.com/platform/webhook-operator:0.1.0 .
# Then set the chart's image.repository / image.tag to it.

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# Dependencies first, so source edits do not rebuild them: build against placeholder sources.
# Cargo refuses a manifest whose declared targets have no file, so every [[bin]], [[bench]] and
# [[example]] of Cargo.toml gets a placeholder (scripts/check-chart.sh replays these steps and
# fails when one is missing). The examples' placeholders stay: .dockerignore leaves examples/ out.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin benches examples/receivers/rust \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > src/bin/kubectl-webhooks.rs \
 && for b in delivery store dispatch transform cache_memory; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && echo 'fn main() {}' > examples/receivers/rust/main.rs \
 && echo 'fn main() {}' > examples/bench_e2e.rs \
 && cargo build --release --locked --bin webhook-operator \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
# Touch the sources so cargo sees them as newer than the stub build.
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin webhook-operator \
 && strip target/release/webhook-operator \
 && ./target/release/webhook-operator --help >/dev/null

# Runtime: glibc + libgcc + CA certificates, no shell, runs as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/webhook-operator /usr/local/bin/webhook-operator
USER 65532:65532
# 8000: dispatcher ingest API; 8080: /metrics, /healthz, /readyz.
EXPOSE 8000 8080
ENTRYPOINT ["/usr/local/bin/webhook-operator"]
CMD ["controller"]
