# syntax=docker/dockerfile:1
# mysql-pitr: one static binary on a distroless base, running as a numeric
# non-root user so that Kubernetes' runAsNonRoot can verify it.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t mysql-pitr .
#
# Dockerfile.physical adds mariadb-backup for physical snapshots.

FROM golang:1.26 AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: a static binary, which the final image (no libc) needs.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/mysql-pitr ./cmd/mysql-pitr

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/mysql-pitr/mysql-pitr" \
      org.opencontainers.image.description="Binlog archiving and point-in-time recovery for MySQL and MariaDB"
COPY --from=build /out/mysql-pitr /mysql-pitr
USER 65532:65532
ENTRYPOINT ["/mysql-pitr"]
