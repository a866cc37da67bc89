package dev.gridmesh.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.util.List;
import java.util.Optional;

/** What a failed call says: its status code's name and its {@code google.rpc.BadRequest}. */
public final class Errors {
  private Errors() {}

  /**
   * The {@code google.rpc.BadRequest} detail of a failed call's status (the edge sends it in the
   * {@code grpc-status-details-bin} trailer of an INVALID_ARGUMENT, naming the field that was
   * wrong); empty if it carries none.
   */
  public static Optional<BadRequest> badRequest(Throwable error) {
    com.google.rpc.Status status = StatusProto.fromThrowable(error);
    if (status == null) {
      return Optional.empty();
    }
    for (Any detail : status.getDetailsList()) {
      if (detail.is(BadRequest.class)) {
        try {
          return Optional.of(detail.unpack(BadRequest.class));
        } catch (InvalidProtocolBufferException e) {
          return Optional.empty(); // a detail that says it is one but is not: none to read
        }
      }
    }
    return Optional.empty();
  }

  /**
   * The field violations of the error's BadRequest, e.g. {@code params.text} of a refused
   * SubmitTask; none if it has no such detail.
   */
  public static List<BadRequest.FieldViolation> fieldViolations(Throwable error) {
    return badRequest(error).map(BadRequest::getFieldViolationsList).orElse(List.of());
  }

  /**
   * The name of the error's gRPC status code, "INVALID_ARGUMENT" and so on, as every gridmesh
   * client and the docs spell it; "UNKNOWN" for an error that carries no status.
   */
  public static String codeName(Throwable error) {
    Status.Code code = Status.fromThrowable(error).getCode();
    Code named = Code.forNumber(code.value());
    return named == null ? code.name() : named.name();
  }
}
