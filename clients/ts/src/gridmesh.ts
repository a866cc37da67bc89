/**
 * Small helpers around the code buf generates from protos/gridmesh/v1 (in
 * ./gen), for talking gRPC to a gridmesh edge with Connect:
 *
 * - {@link gridmeshTransport}: gRPC over HTTP/2 and TLS to the edge, with the
 *   API key on every call and a default deadline; pass it to Connect's
 *   `createClient(Scheduler, transport)`.
 * - {@link structFromJson} / {@link structToJson}: google.protobuf.Struct and
 *   plain JSON objects.
 * - {@link timestampNow}: a google.protobuf.Timestamp of now.
 * - {@link fieldViolations}, {@link grpcCodeName}: what a refused call says
 *   (its google.rpc.BadRequest detail and its status code's name).
 * - {@link enumName}: the proto name of an enum value ("QUEUED", "CREATE").
 */
import { readFileSync } from "node:fs";

import { fromJson, toJson, type DescEnum, type JsonObject } from "@bufbuild/protobuf";
import { StructSchema, type Struct } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BadRequestSchema, type BadRequest_FieldViolation } from "./gen/google/rpc/error_details_pb.js";

export { timestampDate, timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";

/** The deadline of a call that does not set its own `timeoutMs`. */
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface MeshOptions {
  /** The edge's gRPC address, host:port. */
  edge: string;
  /** A PEM file with the CA the edge's TLS certificate chains to. */
  caFile: string;
  /** An API key (`gridmesh keys create`); its role decides what the calls may do. */
  apiKey: string;
  /** The deadline of every call that does not pass its own `timeoutMs`. */
  defaultTimeoutMs?: number;
}

/**
 * A transport that speaks real gRPC (HTTP/2, TLS checked against the given
 * CA) to the edge and sends `authorization: Bearer <apiKey>` with every call.
 * One transport keeps one HTTP/2 connection: make one per API key and share
 * it between the clients of that key.
 */
export function gridmeshTransport(options: MeshOptions): Transport {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${options.apiKey}`);
    return next(request);
  };
  return createGrpcTransport({
    baseUrl: `https://${options.edge}`,
    nodeOptions: { ca: readFileSync(options.caFile) },
    interceptors: [bearer],
    defaultTimeoutMs: options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
}

/**
 * A Struct from a plain JSON object. Struct *fields* of the generated
 * messages (Task.params, EntityEvent.payload) are already typed `JsonObject`,
 * so they take and give plain objects directly; this is for a Struct on its own.
 */
export function structFromJson(json: JsonObject): Struct {
  return fromJson(StructSchema, json);
}

/** The plain JSON object a Struct holds (integral numbers stay integers: `42`, not `42.0`). */
export function structToJson(struct: Struct): JsonObject {
  return toJson(StructSchema, struct) as JsonObject;
}

/**
 * The field violations of the google.rpc.BadRequest details of a failed call
 * (sent in its grpc-status-details-bin trailer), e.g. `params.text` of a
 * refused SubmitTask; empty when it carries none.
 */
export function fieldViolations(err: unknown): BadRequest_FieldViolation[] {
  return ConnectError.from(err)
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) => badRequest.fieldViolations);
}

// gRPC's names of the status codes, by number (Connect's Code enum says
// "InvalidArgument"; other gridmesh clients and the docs say "INVALID_ARGUMENT").
const GRPC_CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** The gRPC name of a status code: `grpcCodeName(Code.InvalidArgument)` is "INVALID_ARGUMENT". */
export function grpcCodeName(code: Code): string {
  return GRPC_CODE_NAMES[code] ?? `CODE_${code}`;
}

/**
 * The name an enum value has in the .proto file, e.g.
 * `enumName(TaskStateSchema, task.state)` is "QUEUED" (TypeScript's own
 * `TaskState[task.state]` drops prefixes such as TASK_STATE_).
 */
export function enumName(schema: DescEnum, value: number): string {
  return schema.value[value]?.name ?? String(value);
}
