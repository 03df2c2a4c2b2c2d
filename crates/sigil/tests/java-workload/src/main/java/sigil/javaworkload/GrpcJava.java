package sigil.javaworkload;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.WireFormat;
import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.unix.DomainSocketAddress;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.security.cert.Certificate;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * The Workload API through stock grpc-java: grpc-netty on (unshaded) netty with the epoll
 * transport, dialing {@code new DomainSocketAddress(path)} the way grpc-java's documentation
 * shows, with whatever {@code :authority} grpc-java picks for it unless -authority overrides it.
 * No generated code: FetchX509SVID is a hand-written {@link MethodDescriptor} whose response
 * marshaller reads X509SVIDResponse by field number (proto/workload.proto).
 */
final class GrpcJava {
    private GrpcJava() {}

    static final Metadata.Key<String> SECURITY_HEADER =
            Metadata.Key.of("workload.spiffe.io", Metadata.ASCII_STRING_MARSHALLER);

    /** X509SVID (proto/workload.proto): 1 spiffe_id, 2 x509_svid, 3 x509_svid_key, 4 bundle, 5 hint. */
    record X509Svid(String spiffeId, byte[] certs, byte[] key, byte[] bundle, String hint) {}

    /** X509SVIDResponse: 1 repeated svids, 2 repeated crl, 3 map federated_bundles. */
    record X509SvidResponse(List<X509Svid> svids, List<byte[]> crl, Map<String, byte[]> federatedBundles) {}

    /** X509SVIDRequest has no fields: it is zero bytes on the wire. */
    static final MethodDescriptor.Marshaller<byte[]> EMPTY_REQUEST = new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(byte[] value) {
            return new ByteArrayInputStream(new byte[0]);
        }

        @Override
        public byte[] parse(InputStream stream) {
            return new byte[0];
        }
    };

    static final MethodDescriptor.Marshaller<X509SvidResponse> X509_SVID_RESPONSE = new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(X509SvidResponse value) {
            throw new UnsupportedOperationException("client only");
        }

        @Override
        public X509SvidResponse parse(InputStream stream) {
            try {
                return parseX509SvidResponse(CodedInputStream.newInstance(stream));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    };

    static final MethodDescriptor<byte[], X509SvidResponse> FETCH_X509_SVID =
            MethodDescriptor.<byte[], X509SvidResponse>newBuilder()
                    .setType(MethodDescriptor.MethodType.SERVER_STREAMING)
                    .setFullMethodName(MethodDescriptor.generateFullMethodName("SpiffeWorkloadAPI", "FetchX509SVID"))
                    .setRequestMarshaller(EMPTY_REQUEST)
                    .setResponseMarshaller(X509_SVID_RESPONSE)
                    .build();

    static X509SvidResponse parseX509SvidResponse(CodedInputStream in) throws IOException {
        List<X509Svid> svids = new ArrayList<>();
        List<byte[]> crl = new ArrayList<>();
        Map<String, byte[]> federated = new TreeMap<>();
        int tag;
        while ((tag = in.readTag()) != 0) {
            int field = WireFormat.getTagFieldNumber(tag);
            boolean bytes = WireFormat.getTagWireType(tag) == WireFormat.WIRETYPE_LENGTH_DELIMITED;
            if (field == 1 && bytes) {
                svids.add(parseX509Svid(CodedInputStream.newInstance(in.readByteArray())));
            } else if (field == 2 && bytes) {
                crl.add(in.readByteArray());
            } else if (field == 3 && bytes) {
                // A map entry: 1 key (string), 2 value (bytes).
                CodedInputStream entry = CodedInputStream.newInstance(in.readByteArray());
                String key = "";
                byte[] value = new byte[0];
                int t;
                while ((t = entry.readTag()) != 0) {
                    switch (WireFormat.getTagFieldNumber(t)) {
                        case 1 -> key = entry.readStringRequireUtf8();
                        case 2 -> value = entry.readByteArray();
                        default -> entry.skipField(t);
                    }
                }
                federated.put(key, value);
            } else {
                in.skipField(tag);
            }
        }
        return new X509SvidResponse(svids, crl, federated);
    }

    static X509Svid parseX509Svid(CodedInputStream in) throws IOException {
        String id = "";
        String hint = "";
        byte[] certs = new byte[0];
        byte[] key = new byte[0];
        byte[] bundle = new byte[0];
        int tag;
        while ((tag = in.readTag()) != 0) {
            switch (WireFormat.getTagFieldNumber(tag)) {
                case 1 -> id = in.readStringRequireUtf8();
                case 2 -> certs = in.readByteArray();
                case 3 -> key = in.readByteArray();
                case 4 -> bundle = in.readByteArray();
                case 5 -> hint = in.readStringRequireUtf8();
                default -> in.skipField(tag);
            }
        }
        return new X509Svid(id, certs, key, bundle, hint);
    }

    /** A channel to the socket, as grpc-java's docs build one for a Unix domain socket. */
    @SuppressWarnings("deprecation") // EpollEventLoopGroup: still what grpc-java's examples use
    static ManagedChannel channel(String socket, String authority) {
        if (!Epoll.isAvailable()) {
            throw new IllegalStateException("netty epoll transport unavailable", Epoll.unavailabilityCause());
        }
        EventLoopGroup group = new EpollEventLoopGroup(1);
        NettyChannelBuilder builder = NettyChannelBuilder.forAddress(new DomainSocketAddress(Main.unixPath(socket)))
                .eventLoopGroup(group)
                .channelType(EpollDomainSocketChannel.class)
                .usePlaintext();
        if (authority != null) {
            // Diagnosis only: the default path must send what grpc-java picks by itself.
            builder.overrideAuthority(authority);
        }
        return builder.build();
    }

    static final Set<String> CHANNEL_FLAGS = Set.of("socket", "timeout", "authority");

    /** grpc-fetch: FetchX509SVID's first message. */
    static void fetch(String[] argv) throws Exception {
        Args args = new Args("grpc-fetch", argv, 1, CHANNEL_FLAGS, Set.of("no-header"));
        String socket = Main.socket("grpc-fetch", args);
        long timeout = args.seconds("timeout", 15);
        ManagedChannel channel = channel(socket, args.get("authority", null));
        try {
            Metadata headers = new Metadata();
            if (!args.flag("no-header")) {
                headers.put(SECURITY_HEADER, "true");
            }
            ClientCall<byte[], X509SvidResponse> call =
                    channel.newCall(FETCH_X509_SVID, CallOptions.DEFAULT.withDeadlineAfter(timeout, TimeUnit.SECONDS));
            CompletableFuture<X509SvidResponse> first = new CompletableFuture<>();
            call.start(new ClientCall.Listener<>() {
                @Override
                public void onMessage(X509SvidResponse message) {
                    first.complete(message);
                }

                @Override
                public void onClose(Status status, Metadata trailers) {
                    if (status.isOk()) {
                        first.completeExceptionally(new IllegalStateException("stream ended with no X509SVIDResponse"));
                    } else {
                        first.completeExceptionally(status.asRuntimeException(trailers));
                    }
                }
            }, headers);
            call.request(1);
            call.sendMessage(new byte[0]);
            call.halfClose();
            X509SvidResponse response;
            try {
                response = first.get(timeout + 5, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                throw asException(e.getCause());
            }
            // The stream pushes updates for ever: the first message is all we came for.
            call.cancel("first X509SVIDResponse received", null);

            Map<String, Object> doc = Json.obj();
            List<Object> svids = new ArrayList<>();
            for (X509Svid svid : response.svids()) {
                Map<String, Object> s = Json.obj();
                s.put("spiffe_id", svid.spiffeId());
                List<X509Certificate> chain = certificates(svid.certs());
                s.put("chain_len", chain.size());
                s.put("leaf_uri_sans", chain.isEmpty() ? List.of() : uriSans(chain.get(0)));
                s.put("key_len", svid.key().length);
                s.put("bundle_len", svid.bundle().length);
                s.put("bundle_certs", certificates(svid.bundle()).size());
                s.put("hint", svid.hint());
                svids.add(s);
            }
            doc.put("svids", svids);
            doc.put("bundle_len", response.svids().isEmpty() ? 0 : response.svids().get(0).bundle().length);
            doc.put("crl_count", response.crl().size());
            doc.put("federated_bundles", new ArrayList<>(response.federatedBundles().keySet()));
            doc.put("authority", channel.authority());
            doc.put("client", "grpc-java");
            Main.emit(doc);
        } finally {
            channel.shutdownNow();
        }
    }

    /** grpc-health: grpc.health.v1.Health/Check on the same socket. */
    static void health(String[] argv) throws Exception {
        Args args = new Args("grpc-health", argv, 1, Set.of("socket", "timeout", "authority", "service"), Set.of("no-header"));
        String socket = Main.socket("grpc-health", args);
        long timeout = args.seconds("timeout", 15);
        String service = args.get("service", "");
        ManagedChannel channel = channel(socket, args.get("authority", null));
        try {
            Metadata headers = new Metadata();
            if (!args.flag("no-header")) {
                headers.put(SECURITY_HEADER, "true");
            }
            HealthCheckResponse response = HealthGrpc.newBlockingStub(channel)
                    .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers))
                    .withDeadlineAfter(timeout, TimeUnit.SECONDS)
                    .check(HealthCheckRequest.newBuilder().setService(service).build());
            Map<String, Object> doc = Json.obj();
            doc.put("service", service);
            doc.put("status", response.getStatus().name());
            doc.put("authority", channel.authority());
            doc.put("client", "grpc-java");
            Main.emit(doc);
        } finally {
            channel.shutdownNow();
        }
    }

    static Exception asException(Throwable t) {
        if (t instanceof Exception e) {
            return e;
        }
        return new RuntimeException(t);
    }

    /** Concatenated DER certificates (what x509_svid and bundle hold). */
    static List<X509Certificate> certificates(byte[] der) throws CertificateException {
        List<X509Certificate> out = new ArrayList<>();
        if (der.length == 0) {
            return out;
        }
        Collection<? extends Certificate> certs =
                CertificateFactory.getInstance("X.509").generateCertificates(new ByteArrayInputStream(der));
        for (Certificate c : certs) {
            out.add((X509Certificate) c);
        }
        return out;
    }

    /** A certificate's URI subject alternative names. */
    static List<String> uriSans(X509Certificate cert) throws CertificateException {
        List<String> out = new ArrayList<>();
        Collection<List<?>> sans = cert.getSubjectAlternativeNames();
        if (sans != null) {
            for (List<?> san : sans) {
                if (san.size() >= 2 && Integer.valueOf(6).equals(san.get(0))) {
                    out.add(URI.create(String.valueOf(san.get(1))).toString());
                }
            }
        }
        return out;
    }
}
