package dev.gridmesh.example;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonParseException;
import com.google.gson.ToNumberPolicy;
import com.google.gson.reflect.TypeToken;
import com.google.rpc.BadRequest;
import dev.gridmesh.client.Errors;
import dev.gridmesh.client.Gridmesh;
import dev.gridmesh.client.Structs;
import dev.gridmesh.client.Timestamps;
import dev.gridmesh.v1.Ack;
import dev.gridmesh.v1.ConsumeRequest;
import dev.gridmesh.v1.ConsumeStart;
import dev.gridmesh.v1.Delivery;
import dev.gridmesh.v1.EntityEvent;
import dev.gridmesh.v1.EventManagerGrpc;
import dev.gridmesh.v1.GetResultRequest;
import dev.gridmesh.v1.Operation;
import dev.gridmesh.v1.SchedulerGrpc;
import dev.gridmesh.v1.StoreKeeperGrpc;
import dev.gridmesh.v1.SubmitTaskRequest;
import dev.gridmesh.v1.Task;
import dev.gridmesh.v1.TaskEvent;
import dev.gridmesh.v1.TaskState;
import dev.gridmesh.v1.WatchTaskRequest;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The example every gridmesh client has, in Java over gRPC: submit a word count and watch it,
 * download its result, read a bad request's field violation, and publish and consume an entity
 * event.
 *
 * <p>The mesh comes from the environment: GRIDMESH_EDGE (host:port), GRIDMESH_CA_FILE,
 * GRIDMESH_API_KEY (a submitter key), GRIDMESH_PUBLISHER(_KEY), GRIDMESH_SUBSCRIBER(_KEY)
 * (subscribed to the publisher's "customer" events) and GRIDMESH_TEXT. Each step prints one JSON
 * line on stdout; a failure prints why on stderr and exits 1.
 */
public final class Example {
  // Every call has a deadline. Streams get longer ones: a task may queue and
  // run for a while, and a consumer waits for the event to reach its queue.
  private static final long WATCH_SECONDS = 120;
  private static final long CALL_SECONDS = 30;
  private static final long CONSUME_SECONDS = 60;
  private static final String RESULT_DIR = "clients-java";
  private static final Set<TaskState> TERMINAL = Set.of(TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED);
  /** JSON numbers with no fraction read as Longs, the rest as Doubles. */
  private static final Gson GSON =
      new GsonBuilder().setObjectToNumberStrategy(ToNumberPolicy.LONG_OR_DOUBLE).disableHtmlEscaping().create();

  private Example() {}

  public static void main(String[] args) {
    try {
      run(readEnv("GRIDMESH_EDGE", "GRIDMESH_CA_FILE", "GRIDMESH_API_KEY", "GRIDMESH_PUBLISHER",
          "GRIDMESH_PUBLISHER_KEY", "GRIDMESH_SUBSCRIBER", "GRIDMESH_SUBSCRIBER_KEY", "GRIDMESH_TEXT"));
    } catch (Exception e) {
      System.err.println("gridmesh example: " + e);
      System.exit(1);
    }
  }

  private static void run(Map<String, String> env) throws Exception {
    // One channel per API key: the key is the caller's identity and role.
    Path ca = Path.of(env.get("GRIDMESH_CA_FILE"));
    String edge = env.get("GRIDMESH_EDGE");
    ManagedChannel submitter = Gridmesh.channel(edge, ca, env.get("GRIDMESH_API_KEY"));
    ManagedChannel publisher = Gridmesh.channel(edge, ca, env.get("GRIDMESH_PUBLISHER_KEY"));
    ManagedChannel subscriber = Gridmesh.channel(edge, ca, env.get("GRIDMESH_SUBSCRIBER_KEY"));
    try {
      SchedulerGrpc.SchedulerBlockingStub scheduler = SchedulerGrpc.newBlockingStub(submitter);

      Task task = scheduler.submitTask(SubmitTaskRequest.newBuilder()
          .setTaskType("word_count")
          .setParams(Structs.of(Map.of("text", env.get("GRIDMESH_TEXT"))))
          .setResultDir(RESULT_DIR)
          .build());
      emit("submitted", Map.of("task_id", task.getTaskId()));

      List<String> states = watch(scheduler, task.getTaskId());
      emit("watched", Map.of("states", states));
      if (!states.get(states.size() - 1).equals(TaskState.SUCCEEDED.name())) {
        throw new IllegalStateException("task " + task.getTaskId() + " ended " + states);
      }

      byte[] body = download(StoreKeeperGrpc.newBlockingStub(submitter), task.getTaskId());
      Map<String, Object> result;
      try {
        result = GSON.fromJson(new String(body, StandardCharsets.UTF_8), new TypeToken<Map<String, Object>>() {});
      } catch (JsonParseException e) {
        throw new IllegalStateException("the result of task " + task.getTaskId() + " is no JSON object", e);
      }
      emit("downloaded", Map.of("bytes", body.length, "sha256", sha256(body), "result", result));

      refused(scheduler);

      String entityId = UUID.randomUUID().toString();
      publish(EventManagerGrpc.newBlockingStub(publisher), env.get("GRIDMESH_PUBLISHER"), entityId);
      emit("published", Map.of("entity_id", entityId, "version", 1));

      EntityEvent event = consume(EventManagerGrpc.newStub(subscriber), env.get("GRIDMESH_SUBSCRIBER"), entityId);
      emit("consumed", Map.of(
          "entity_id", event.getEntityId(),
          "operation", event.getOperation().name(),
          "payload", Structs.toMap(event.getPayload()))); // 42, not 42.0
    } finally {
      for (ManagedChannel channel : List.of(submitter, publisher, subscriber)) {
        channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
      }
    }
  }

  /** The names of the task's states as they arrive (its state now, then each change), to a terminal one. */
  private static List<String> watch(SchedulerGrpc.SchedulerBlockingStub scheduler, String taskId) {
    List<String> states = new ArrayList<>();
    Iterator<TaskEvent> events = scheduler.withDeadlineAfter(WATCH_SECONDS, TimeUnit.SECONDS)
        .watchTask(WatchTaskRequest.newBuilder().setTaskId(taskId).build());
    while (events.hasNext()) { // a blocking stream: hasNext waits for the next event
      TaskState state = events.next().getTask().getState();
      states.add(state.name());
      if (TERMINAL.contains(state)) {
        return states; // the server ends the stream after a terminal state
      }
    }
    throw new IllegalStateException("the watch of task " + taskId + " ended after " + states);
  }

  /** The task's result: a stream of google.api.HttpBody chunks. */
  private static byte[] download(StoreKeeperGrpc.StoreKeeperBlockingStub storeKeeper, String taskId) {
    ByteArrayOutputStream body = new ByteArrayOutputStream();
    storeKeeper.withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS)
        .getResult(GetResultRequest.newBuilder().setTaskId(taskId).build())
        .forEachRemaining(chunk -> body.writeBytes(chunk.getData().toByteArray()));
    return body.toByteArray();
  }

  /** Submits a word count whose text is a number and prints what the edge's INVALID_ARGUMENT says about it. */
  private static void refused(SchedulerGrpc.SchedulerBlockingStub scheduler) {
    try {
      scheduler.submitTask(SubmitTaskRequest.newBuilder()
          .setTaskType("word_count")
          .setParams(Structs.of(Map.of("text", 5)))
          .setResultDir(RESULT_DIR)
          .build());
    } catch (StatusRuntimeException e) {
      List<BadRequest.FieldViolation> violations = Errors.fieldViolations(e);
      if (violations.isEmpty()) {
        throw e; // refused, but not for a field
      }
      emit("refused", Map.of(
          "code", Errors.codeName(e),
          "field", violations.get(0).getField(),
          "description", violations.get(0).getDescription()));
      return;
    }
    throw new IllegalStateException("a word_count with a number for its text was accepted");
  }

  /** Publishes version 1 of a new customer as the publisher. */
  private static void publish(EventManagerGrpc.EventManagerBlockingStub events, String publisher, String entityId) {
    events.publish(EntityEvent.newBuilder()
        .setEventId(UUID.randomUUID().toString()) // what the mesh de-duplicates on
        .setPublisher(publisher)
        .setEntityType("customer")
        .setEntityId(entityId)
        .setOperation(Operation.CREATE)
        .setVersion(1)
        .setPayload(Structs.of(Map.of("name", "Ada", "credit", 42)))
        .setOccurredAt(Timestamps.now())
        .build());
  }

  /**
   * Reads the subscriber's deliveries until the event of entityId comes, acknowledging each one,
   * then closes its side. Consume is a bidirectional stream: ConsumeStart first, then an Ack per
   * delivery.
   */
  private static EntityEvent consume(EventManagerGrpc.EventManagerStub events, String subscriber, String entityId)
      throws InterruptedException, ExecutionException, TimeoutException {
    Consumer consumer = new Consumer(entityId);
    StreamObserver<ConsumeRequest> requests =
        events.withDeadlineAfter(CONSUME_SECONDS, TimeUnit.SECONDS).consume(consumer);
    requests.onNext(ConsumeRequest.newBuilder()
        .setStart(ConsumeStart.newBuilder().setSubscriber(subscriber).setPrefetch(16))
        .build());
    return consumer.event.get(CONSUME_SECONDS + 5, TimeUnit.SECONDS);
  }

  /**
   * The responses of a Consume call. grpc-java calls it on one thread at a time, and hands it the
   * request stream (beforeStart) before any delivery can come, so it acknowledges from there.
   */
  private static final class Consumer implements ClientResponseObserver<ConsumeRequest, Delivery> {
    final CompletableFuture<EntityEvent> event = new CompletableFuture<>();
    private final String entityId;
    private StreamObserver<ConsumeRequest> requests;
    private EntityEvent ours;

    Consumer(String entityId) {
      this.entityId = entityId;
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<ConsumeRequest> requests) {
      this.requests = requests;
    }

    @Override
    public void onNext(Delivery delivery) {
      if (ours != null) {
        return; // sent before the server saw us close: unacknowledged, so its queue keeps it
      }
      requests.onNext(ConsumeRequest.newBuilder()
          .setAck(Ack.newBuilder().setDeliveryId(delivery.getDeliveryId()))
          .build());
      if (delivery.getEvent().getEntityId().equals(entityId)) {
        ours = delivery.getEvent();
        // Half-close rather than cancel: the server applies the acks it got,
        // then ends the stream (onCompleted).
        requests.onCompleted();
      }
    }

    @Override
    public void onError(Throwable error) {
      event.completeExceptionally(error);
    }

    @Override
    public void onCompleted() {
      if (ours == null) {
        event.completeExceptionally(new IllegalStateException("the stream ended before the event arrived"));
      } else {
        event.complete(ours);
      }
    }
  }

  private static String sha256(byte[] body) throws NoSuchAlgorithmException {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body));
  }

  /** Prints one step as a line of JSON on stdout. */
  private static void emit(String step, Map<String, Object> fields) {
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("step", step);
    line.putAll(fields);
    System.out.println(GSON.toJson(line));
  }

  /** The named environment variables, all of which must be set. */
  private static Map<String, String> readEnv(String... names) {
    Map<String, String> env = new LinkedHashMap<>();
    for (String name : names) {
      String value = System.getenv(name);
      if (value == null || value.isEmpty()) {
        throw new IllegalArgumentException(name + " is not set");
      }
      env.put(name, value);
    }
    return env;
  }
}
