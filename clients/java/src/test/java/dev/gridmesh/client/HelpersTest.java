package dev.gridmesh.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import io.grpc.Attributes;
import io.grpc.CallCredentials;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The helpers without a mesh: Structs, Errors, ApiKey, the default deadline and Timestamps. */
class HelpersTest {
  @Test
  void aStructRoundTripsWithIntegersKeptIntegers() {
    Map<String, Object> nested = new LinkedHashMap<>();
    nested.put("ok", true);
    nested.put("none", null);
    Map<String, Object> map = new LinkedHashMap<>();
    map.put("text", "to be");
    map.put("count", 42);
    map.put("ratio", 0.5);
    map.put("big", 1L << 53);
    map.put("items", List.of(1, "two", nested));
    Struct struct = Structs.of(map);

    assertEquals(42.0, struct.getFieldsOrThrow("count").getNumberValue());
    Map<String, Object> back = Structs.toMap(struct);
    assertEquals(42L, back.get("count"));
    assertEquals(0.5, back.get("ratio"));
    assertEquals(1L << 53, back.get("big"));
    assertEquals(Arrays.asList(1L, "two", nested), back.get("items"));
    assertTrue(back.containsKey("text") && back.get("text").equals("to be"));
  }

  @Test
  void numbersADoubleCannotHoldExactlyStayDoubles() {
    assertEquals(1e300, Structs.toJava(Value.newBuilder().setNumberValue(1e300).build()));
    assertNull(Structs.toJava(Value.getDefaultInstance()));
  }

  @Test
  void aValueJsonCannotHoldIsRefusedNamingWhere() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Structs.of(Map.of("params", Map.of("when", Instant.EPOCH))));
    assertTrue(e.getMessage().startsWith("params.when: a java.time.Instant is no JSON value"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> Structs.of(Map.of("m", Map.of(1, "x"))));
  }

  @Test
  void theBadRequestOfARefusedCallIsRead() {
    BadRequest badRequest = BadRequest.newBuilder()
        .addFieldViolations(BadRequest.FieldViolation.newBuilder()
            .setField("params.text").setDescription("params.text: 5 is not of type 'string'"))
        .build();
    StatusRuntimeException refused = StatusProto.toStatusRuntimeException(com.google.rpc.Status.newBuilder()
        .setCode(Code.INVALID_ARGUMENT_VALUE)
        .setMessage("params.text: 5 is not of type 'string'")
        .addDetails(Any.pack(badRequest))
        .build());

    assertEquals(badRequest, Errors.badRequest(refused).orElseThrow());
    assertEquals("params.text", Errors.fieldViolations(refused).get(0).getField());
    assertEquals("INVALID_ARGUMENT", Errors.codeName(refused));
  }

  @Test
  void anErrorWithoutDetailsHasNoViolations() {
    StatusRuntimeException denied = Status.PERMISSION_DENIED.withDescription("no").asRuntimeException();
    assertTrue(Errors.badRequest(denied).isEmpty());
    assertEquals(List.of(), Errors.fieldViolations(denied));
    assertEquals("PERMISSION_DENIED", Errors.codeName(denied));
    assertEquals("UNKNOWN", Errors.codeName(new IllegalStateException("not a gRPC error")));
  }

  @Test
  void theApiKeyGoesOverTlsOnly() {
    AtomicReference<Metadata> sent = new AtomicReference<>();
    AtomicReference<Status> failed = new AtomicReference<>();
    CallCredentials.MetadataApplier applier = new CallCredentials.MetadataApplier() {
      @Override
      public void apply(Metadata headers) {
        sent.set(headers);
      }

      @Override
      public void fail(Status status) {
        failed.set(status);
      }
    };
    ApiKey key = new ApiKey("s3cret");

    key.applyRequestMetadata(requestInfo(SecurityLevel.PRIVACY_AND_INTEGRITY), Runnable::run, applier);
    assertEquals("Bearer s3cret",
        sent.get().get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)));

    sent.set(null);
    key.applyRequestMetadata(requestInfo(SecurityLevel.NONE), Runnable::run, applier);
    assertNull(sent.get());
    assertEquals(Status.Code.UNAUTHENTICATED, failed.get().getCode());
    assertTrue(!key.toString().contains("s3cret"));
  }

  @Test
  void aUnaryCallWithoutADeadlineGetsTheDefaultOneAndStreamsKeepTheirs() {
    AtomicReference<CallOptions> seen = new AtomicReference<>();
    Channel channel = new Channel() {
      @Override
      public <ReqT, RespT> ClientCall<ReqT, RespT> newCall(MethodDescriptor<ReqT, RespT> method, CallOptions options) {
        seen.set(options);
        return null;
      }

      @Override
      public String authority() {
        return "edge";
      }
    };
    Gridmesh.DefaultDeadline interceptor = new Gridmesh.DefaultDeadline(Duration.ofSeconds(30));

    interceptor.interceptCall(method(MethodDescriptor.MethodType.UNARY), CallOptions.DEFAULT, channel);
    long left = seen.get().getDeadline().timeRemaining(java.util.concurrent.TimeUnit.SECONDS);
    assertTrue(left > 25 && left <= 30, "deadline in " + left + " s");

    interceptor.interceptCall(method(MethodDescriptor.MethodType.SERVER_STREAMING), CallOptions.DEFAULT, channel);
    assertNull(seen.get().getDeadline());

    CallOptions own = CallOptions.DEFAULT.withDeadlineAfter(2, java.util.concurrent.TimeUnit.SECONDS);
    interceptor.interceptCall(method(MethodDescriptor.MethodType.UNARY), own, channel);
    assertNotNull(seen.get().getDeadline());
    assertTrue(seen.get().getDeadline().timeRemaining(java.util.concurrent.TimeUnit.SECONDS) <= 2);
  }

  @Test
  void timestampsKeepNanoseconds() {
    Instant instant = Instant.ofEpochSecond(1_700_000_000L, 123_456_789);
    assertEquals(instant, Timestamps.toInstant(Timestamps.of(instant)));
    assertTrue(Timestamps.now().getSeconds() > 1_700_000_000L);
  }

  private static CallCredentials.RequestInfo requestInfo(SecurityLevel level) {
    return new CallCredentials.RequestInfo() {
      @Override
      public MethodDescriptor<?, ?> getMethodDescriptor() {
        return method(MethodDescriptor.MethodType.UNARY);
      }

      @Override
      public SecurityLevel getSecurityLevel() {
        return level;
      }

      @Override
      public String getAuthority() {
        return "edge";
      }

      @Override
      public Attributes getTransportAttrs() {
        return Attributes.EMPTY;
      }
    };
  }

  private static MethodDescriptor<String, String> method(MethodDescriptor.MethodType type) {
    MethodDescriptor.Marshaller<String> strings = new MethodDescriptor.Marshaller<>() {
      @Override
      public InputStream stream(String value) {
        return new ByteArrayInputStream(value.getBytes(java.nio.charset.StandardCharsets.UTF_8));
      }

      @Override
      public String parse(InputStream stream) {
        return "";
      }
    };
    return MethodDescriptor.<String, String>newBuilder()
        .setType(type)
        .setFullMethodName("gridmesh.v1.Scheduler/GetTask")
        .setRequestMarshaller(strings)
        .setResponseMarshaller(strings)
        .build();
  }
}
