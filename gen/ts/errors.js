// The registry reports bad input as InvalidArgument with a
// google.rpc.BadRequest detail naming each bad field. That message is not
// part of tenantregistry.v1 or of @bufbuild/protobuf's well-known types, so
// its descriptor is declared here, field for field as in
// google/rpc/error_details.proto, for ConnectError.findDetails to decode it
// over every protocol (Connect, gRPC-Web, gRPC).
import { create, createFileRegistry } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

const { OPTIONAL, REPEATED } = FieldDescriptorProto_Label;
const { STRING, MESSAGE } = FieldDescriptorProto_Type;

function field(name, number, jsonName, type = STRING, typeName = undefined, label = OPTIONAL) {
  return { name, number, jsonName, type, typeName, label };
}

const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "google/rpc/error_details.proto",
    package: "google.rpc",
    syntax: "proto3",
    messageType: [
      {
        name: "BadRequest",
        field: [
          field("field_violations", 1, "fieldViolations", MESSAGE, ".google.rpc.BadRequest.FieldViolation", REPEATED),
        ],
        nestedType: [
          {
            name: "FieldViolation",
            field: [
              field("field", 1, "field"),
              field("description", 2, "description"),
              field("reason", 3, "reason"),
              field("localized_message", 4, "localizedMessage", MESSAGE, ".google.rpc.LocalizedMessage"),
            ],
          },
        ],
      },
      {
        name: "LocalizedMessage",
        field: [field("locale", 1, "locale"), field("message", 2, "message")],
      },
    ],
  }),
  () => undefined,
);

export const BadRequestSchema = registry.getMessage("google.rpc.BadRequest");

export function fieldViolations(error) {
  const err = ConnectError.from(error);
  return err
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) => badRequest.fieldViolations)
    .map(({ field, description }) => ({ field, description }));
}
