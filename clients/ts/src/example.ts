/**
 * The example every gridmesh client has, in TypeScript over gRPC: submit a
 * word count and watch it, download its result, read a bad request's field
 * violation, and publish and consume an entity event.
 *
 * The mesh comes from the environment: GRIDMESH_EDGE (host:port),
 * GRIDMESH_CA_FILE, GRIDMESH_API_KEY (a submitter key),
 * GRIDMESH_PUBLISHER(_KEY), GRIDMESH_SUBSCRIBER(_KEY) (subscribed to the
 * publisher's "customer" events) and GRIDMESH_TEXT. Each step prints one JSON
 * line on stdout; a failure prints why on stderr and exits 1.
 */
import { createHash, randomUUID } from "node:crypto";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";

import { Operation, OperationSchema, TaskState, TaskStateSchema } from "./gen/gridmesh/v1/common_pb.js";
import { EventManager, type ConsumeRequestSchema, type Delivery } from "./gen/gridmesh/v1/eventmanager_pb.js";
import { Scheduler } from "./gen/gridmesh/v1/scheduler_pb.js";
import { StoreKeeper } from "./gen/gridmesh/v1/storekeeper_pb.js";
import { enumName, fieldViolations, grpcCodeName, gridmeshTransport, timestampNow } from "./gridmesh.js";

// Streams get deadlines of their own: a task may queue and run for a while,
// and a consumer waits for the event to be routed to its queue.
const WATCH_TIMEOUT_MS = 120_000;
const CONSUME_TIMEOUT_MS = 60_000;
const RESULT_DIR = "clients-ts";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function emit(step: string, fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

let doing = "starting"; // what the error message on stderr says failed

async function main(): Promise<void> {
  const edge = env("GRIDMESH_EDGE");
  const caFile = env("GRIDMESH_CA_FILE");
  const submitter = gridmeshTransport({ edge, caFile, apiKey: env("GRIDMESH_API_KEY") });
  const scheduler = createClient(Scheduler, submitter);
  const storeKeeper = createClient(StoreKeeper, submitter);

  doing = "submitting the word count";
  const task = await scheduler.submitTask({
    taskType: "word_count",
    params: { text: env("GRIDMESH_TEXT") }, // a google.protobuf.Struct field takes a plain object
    resultDir: RESULT_DIR,
  });
  emit("submitted", { task_id: task.taskId });

  doing = `watching task ${task.taskId}`;
  // The task's state now, then each change; the server ends the stream at a terminal state.
  const states: string[] = [];
  let last = task;
  for await (const event of scheduler.watchTask({ taskId: task.taskId }, { timeoutMs: WATCH_TIMEOUT_MS })) {
    if (event.task) last = event.task;
    states.push(enumName(TaskStateSchema, last.state));
  }
  emit("watched", { states });
  if (last.state !== TaskState.SUCCEEDED) {
    throw new Error(`the task ended ${enumName(TaskStateSchema, last.state)}: ${last.error}`);
  }

  doing = `downloading the result of task ${task.taskId}`;
  const chunks: Uint8Array[] = [];
  for await (const chunk of storeKeeper.getResult({ taskId: task.taskId })) chunks.push(chunk.data);
  const body = Buffer.concat(chunks);
  emit("downloaded", {
    bytes: body.length,
    sha256: createHash("sha256").update(body).digest("hex"),
    result: JSON.parse(body.toString("utf8")) as unknown,
  });

  doing = "submitting a word count whose text is a number";
  const refusal = await scheduler
    .submitTask({ taskType: "word_count", params: { text: 5 }, resultDir: RESULT_DIR })
    .then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
  if (refusal === undefined) throw new Error("a word_count with a number for its text was accepted");
  const [violation] = fieldViolations(refusal);
  if (violation === undefined) throw refusal; // refused, but not for a bad field: show why
  emit("refused", {
    code: grpcCodeName(refusal.code),
    field: violation.field,
    description: violation.description,
  });

  doing = "publishing a customer event";
  const publisher = env("GRIDMESH_PUBLISHER");
  const entityId = randomUUID();
  const events = createClient(EventManager, gridmeshTransport({ edge, caFile, apiKey: env("GRIDMESH_PUBLISHER_KEY") }));
  await events.publish({
    eventId: randomUUID(),
    publisher,
    entityType: "customer",
    entityId,
    operation: Operation.CREATE,
    version: 1n, // int64 fields are bigints
    payload: { name: "Ada", credit: 42 },
    occurredAt: timestampNow(),
  });
  emit("published", { entity_id: entityId, version: 1 });

  doing = "consuming the customer event";
  const subscriber = env("GRIDMESH_SUBSCRIBER");
  const inbox = createClient(EventManager, gridmeshTransport({ edge, caFile, apiKey: env("GRIDMESH_SUBSCRIBER_KEY") }));
  // Consume is a bidi stream: ConsumeStart first, then an Ack per delivery, written as they are due.
  const requests = createWritableIterable<MessageInitShape<typeof ConsumeRequestSchema>>();
  const deliveries = inbox.consume(requests, { timeoutMs: CONSUME_TIMEOUT_MS });
  await requests.write({ kind: { case: "start", value: { subscriber, prefetch: 16 } } });
  let ours: Delivery | undefined;
  for await (const delivery of deliveries) {
    if (ours !== undefined) continue; // sent after we closed: unacknowledged, so the queue keeps it
    await requests.write({ kind: { case: "ack", value: { deliveryId: delivery.deliveryId } } });
    if (delivery.event?.entityId === entityId) {
      ours = delivery;
      // Half-close: the server applies the acks it got, then ends the stream (read on to that end).
      requests.close();
    }
  }
  if (ours?.event === undefined) throw new Error(`the stream ended before the event of ${entityId} arrived`);
  emit("consumed", {
    entity_id: ours.event.entityId,
    operation: enumName(OperationSchema, ours.event.operation),
    payload: ours.event.payload ?? {},
  });
}

main().catch((err: unknown) => {
  const why = err instanceof Error ? err.message : String(err);
  process.stderr.write(`gridmesh example: failed ${doing}: ${why}\n`);
  // exit now: a stream still open would keep the process waiting for its deadline
  process.exit(1);
});
