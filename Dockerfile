# syntax=docker/dockerfile:1
# Multi-stage build: a static sseloop binary in a distroless, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sseloop ./cmd/sseloop
# The store directory, owned by the nonroot user: a named volume mounted there
# starts with this owner, so the server can write its file.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sseloop /usr/local/bin/sseloop
COPY configs/sseloop.yaml /etc/sseloop/sseloop.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/sseloop
USER nonroot:nonroot
# History survives restarts when /var/lib/sseloop is a volume
# (docker run -v sseloop-data:/var/lib/sseloop ...); without one it lives in
# the container's own layer. Set SSELOOP_STORE__PATH=:memory: to keep none.
ENV SSELOOP_STORE__PATH=/var/lib/sseloop/events.db
VOLUME /var/lib/sseloop
EXPOSE 8080
# No curl in the image: the binary checks itself. It reads the same config
# file and SSELOOP_ environment as the server, so set the address with
# SSELOOP_LISTEN (or in the file), not as a docker run argument, and the
# healthcheck follows it.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/sseloop", "healthcheck", "--config", "/etc/sseloop/sseloop.yaml"]
ENTRYPOINT ["/usr/local/bin/sseloop", "--config", "/etc/sseloop/sseloop.yaml"]
