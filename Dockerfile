# syntax=docker/dockerfile:1
# Multi-stage build: a static sseloop binary in a distroless, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sseloop ./cmd/sseloop

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sseloop /usr/local/bin/sseloop
COPY configs/sseloop.yaml /etc/sseloop/sseloop.yaml
USER nonroot:nonroot
EXPOSE 8080
# No curl in the image: the binary checks itself.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/sseloop", "healthcheck", "--config", "/etc/sseloop/sseloop.yaml"]
ENTRYPOINT ["/usr/local/bin/sseloop", "--config", "/etc/sseloop/sseloop.yaml"]
