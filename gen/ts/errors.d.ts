import type { Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";

/** google.rpc.BadRequest: the bad fields of a request. */
export type BadRequest = Message<"google.rpc.BadRequest"> & {
  fieldViolations: BadRequest_FieldViolation[];
};

/** google.rpc.BadRequest.FieldViolation: one bad field. */
export type BadRequest_FieldViolation = Message<"google.rpc.BadRequest.FieldViolation"> & {
  /** The field's path, with proto names, for example `slug` or `metadata`. */
  field: string;
  /** Why it is bad, readable by people. */
  description: string;
  reason: string;
  localizedMessage?: LocalizedMessage;
};

/** google.rpc.LocalizedMessage. */
export type LocalizedMessage = Message<"google.rpc.LocalizedMessage"> & {
  locale: string;
  message: string;
};

/**
 * Describes google.rpc.BadRequest, for `ConnectError.findDetails`:
 * `err.findDetails(BadRequestSchema)`.
 */
export declare const BadRequestSchema: GenMessage<BadRequest>;

/**
 * The field violations an InvalidArgument error carries, in order; empty for
 * other errors. Accepts anything a call may throw.
 */
export declare function fieldViolations(error: unknown): { field: string; description: string }[];
