# syntax=docker/dockerfile:1
# The tenant-registry image: a static binary (no cgo; SQLite is pure Go) on
# distroless, running as an unprivileged user.
#
#   docker build -t tenant-registry .
#   docker run --rm -p 8090:8090 -e APP_ENV=dev tenant-registry
#   docker run --rm -e DATABASE_URL=postgres://... -e KEYCLOAK_ISSUER=... \
#     -e OIDC_AUDIENCE=... tenant-registry migrate up      # as an init container

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer stays cached while only the code changes. The
# generated code and the Go SDK are modules of their own (replaced by ./gen
# and ./sdk/go), so their go.mod files come along.
COPY go.mod go.sum ./
COPY gen/go.mod gen/go.sum ./gen/
COPY sdk/go/go.mod sdk/go/go.sum ./sdk/go/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The same flags as `task image:check`, which checks the result is static.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/tenant-registry ./cmd/tenant-registry \
    && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tenant-registry /usr/local/bin/tenant-registry
# The embedded SQLite default keeps its file in ./data: the working
# directory is / so that it is /data, a volume the unprivileged user owns.
# Production sets DATABASE_URL to PostgreSQL instead.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /
# prod by default: the server refuses to start without KEYCLOAK_ISSUER
# instead of running with authentication off; pass APP_ENV=dev to try it.
ENV APP_ENV=prod \
    ADDR=:8090
USER nonroot:nonroot
EXPOSE 8090
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/tenant-registry"]
CMD ["serve"]
