package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// strictJSON is Connect's JSON codec without its leniency: an unknown
// field or enum name is an error (InvalidArgument) instead of being
// dropped. For a control plane a silently ignored field is worse than a
// refused request: a misspelt "expireTime" would issue a key that never
// expires.
type strictJSON struct{ name string }

var _ connect.Codec = strictJSON{}

// codecs replace both names Connect registers for JSON, and its binary
// codec, which now keeps the encodings of shared answers.
var codecs = []connect.HandlerOption{
	connect.WithCodec(strictJSON{"json"}),
	connect.WithCodec(strictJSON{"json; charset=utf-8"}),
	connect.WithCodec(binaryProto{}),
}

func (c strictJSON) Name() string { return c.name }

func (c strictJSON) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	return protojson.Marshal(m)
}

// MarshalAppend lets Connect marshal into its pooled buffers, as its own
// JSON codec does, instead of growing a fresh slice for every response.
func (c strictJSON) MarshalAppend(dst []byte, message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	if e := encodingsOf(message); e != nil {
		return appendEncoded(dst, &e.json, func() ([]byte, error) { return protojson.Marshal(m) })
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c strictJSON) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto message", message)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("the request body is empty; send a JSON object, {} at least")
	}
	if err := protojson.Unmarshal(data, m); err != nil {
		return fmt.Errorf("invalid JSON request: %w", err)
	}
	return nil
}

// MarshalStable and IsBinary let Connect use the codec for GET requests.
func (c strictJSON) MarshalStable(message any) ([]byte, error) {
	b, err := c.Marshal(message)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (c strictJSON) IsBinary() bool { return false }

// binaryProto is Connect's binary codec, for gRPC, gRPC-Web and Connect
// alike, which encodes a shared answer once (see sharedAnswers).
type binaryProto struct{}

var _ connect.Codec = binaryProto{}

func (binaryProto) Name() string { return "proto" }

func (binaryProto) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	return proto.Marshal(m)
}

func (binaryProto) MarshalAppend(dst []byte, message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	if e := encodingsOf(message); e != nil {
		return appendEncoded(dst, &e.binary, func() ([]byte, error) { return proto.Marshal(m) })
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

func (binaryProto) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto message", message)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", message, err)
	}
	return nil
}

// MarshalStable lets Connect use the codec for GET requests.
func (binaryProto) MarshalStable(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func (binaryProto) IsBinary() bool { return true }
