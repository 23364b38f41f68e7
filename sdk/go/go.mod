module github.com/tenant-registry/tenant-registry/sdk/go

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/tenant-registry/tenant-registry/gen v0.0.0
)

require google.golang.org/protobuf v1.36.12

require golang.org/x/mod v0.43.0

replace github.com/tenant-registry/tenant-registry/gen => ../../gen
