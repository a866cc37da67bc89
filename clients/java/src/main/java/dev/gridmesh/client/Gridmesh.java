package dev.gridmesh.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/** Channels to a gridmesh edge. */
public final class Gridmesh {
  /**
   * The deadline a unary call gets when it sets none. Streams (WatchTask, GetResult, Consume) last
   * until their own deadline: give each one with {@code stub.withDeadlineAfter(...)}.
   */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(30);

  private Gridmesh() {}

  /**
   * A channel to the edge at {@code host:port}, over TLS checked against the PEM CA in {@code
   * caFile}, sending {@code authorization: Bearer <apiKey>} with every call. Like every gRPC
   * channel it connects lazily, on the first call, and reconnects by itself. Share one channel
   * between the stubs of that key ({@code SchedulerGrpc.newBlockingStub(channel)}, ...); shut it
   * down when done.
   */
  public static ManagedChannel channel(String edge, Path caFile, String apiKey) {
    ChannelCredentials tls;
    try {
      tls = TlsChannelCredentials.newBuilder().trustManager(caFile.toFile()).build();
    } catch (IOException e) {
      throw new UncheckedIOException("reading the edge's CA " + caFile, e);
    }
    return Grpc.newChannelBuilder(edge, CompositeChannelCredentials.create(tls, new ApiKey(apiKey)))
        .intercept(new DefaultDeadline(DEFAULT_TIMEOUT))
        .build();
  }

  /** Gives a unary call without a deadline one, so that no call can hang on a lost connection. */
  static final class DefaultDeadline implements ClientInterceptor {
    private final Duration timeout;

    DefaultDeadline(Duration timeout) {
      this.timeout = timeout;
    }

    @Override
    public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
        MethodDescriptor<ReqT, RespT> method, CallOptions options, Channel next) {
      if (options.getDeadline() == null && method.getType() == MethodDescriptor.MethodType.UNARY) {
        options = options.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
      }
      return next.newCall(method, options);
    }
  }
}
