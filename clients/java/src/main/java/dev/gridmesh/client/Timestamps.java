package dev.gridmesh.client;

import com.google.protobuf.Timestamp;
import java.time.Instant;

/** {@code google.protobuf.Timestamp} from {@link Instant}s. */
public final class Timestamps {
  private Timestamps() {}

  /** A Timestamp of now (an event's {@code occurred_at}). */
  public static Timestamp now() {
    return of(Instant.now());
  }

  /** The Timestamp of an instant. */
  public static Timestamp of(Instant instant) {
    return Timestamp.newBuilder().setSeconds(instant.getEpochSecond()).setNanos(instant.getNano()).build();
  }

  /** The instant of a Timestamp. */
  public static Instant toInstant(Timestamp timestamp) {
    return Instant.ofEpochSecond(timestamp.getSeconds(), timestamp.getNanos());
  }
}
