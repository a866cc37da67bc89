package dev.gridmesh.client;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.util.Objects;
import java.util.concurrent.Executor;

/**
 * Sends {@code authorization: Bearer <key>} with every call, the way the edge authenticates a
 * client, and only over a connection with TLS. {@link Gridmesh#channel} installs it for the whole
 * channel; to call as another key on the same channel, use {@code
 * stub.withCallCredentials(new ApiKey(key))}.
 */
public final class ApiKey extends CallCredentials {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final String key;

  public ApiKey(String key) {
    this.key = Objects.requireNonNull(key, "key");
  }

  @Override
  public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
    if (info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY) {
      applier.fail(Status.UNAUTHENTICATED.withDescription("an API key is sent over TLS only"));
      return;
    }
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + key);
    applier.apply(headers);
  }

  @Override
  public String toString() {
    return "ApiKey[...]"; // never the key itself, in a log or an exception
  }
}
