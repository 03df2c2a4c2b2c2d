package sigil.javaworkload;

import io.spiffe.bundle.jwtbundle.JwtBundle;
import io.spiffe.bundle.jwtbundle.JwtBundleSet;
import io.spiffe.bundle.x509bundle.X509Bundle;
import io.spiffe.provider.SpiffeSslContextFactory;
import io.spiffe.provider.SpiffeSslContextFactory.SslContextOptions;
import io.spiffe.spiffeid.SpiffeId;
import io.spiffe.spiffeid.TrustDomain;
import io.spiffe.svid.jwtsvid.JwtSvid;
import io.spiffe.svid.x509svid.X509Svid;
import io.spiffe.svid.x509svid.X509SvidValidator;
import io.spiffe.workloadapi.DefaultJwtSource;
import io.spiffe.workloadapi.DefaultWorkloadApiClient;
import io.spiffe.workloadapi.DefaultX509Source;
import io.spiffe.workloadapi.JwtSource;
import io.spiffe.workloadapi.JwtSourceOptions;
import io.spiffe.workloadapi.WorkloadApiClient;
import io.spiffe.workloadapi.X509Context;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;

/** The Workload API through java-spiffe's public API (java-spiffe-core and java-spiffe-provider). */
final class JavaSpiffe {
    private JavaSpiffe() {}

    /**
     * spiffe-context: every one-shot call, each recorded on its own: FetchX509Context (SVIDs,
     * bundles, our SVID verified against them), DefaultX509Source, FetchJWTSVID, ValidateJWTSVID,
     * FetchJWTBundles, JwtSvid.parseAndValidate offline against those bundles, DefaultJwtSource,
     * and a wrong audience that both the Workload API and the offline check must refuse. Prints
     * one document with a {@code <step>_error} for each step that failed; exit 1 if any did.
     */
    static void context(String[] argv) throws Exception {
        String cmd = "spiffe-context";
        Args args = new Args(cmd, argv, 1, Set.of("socket", "audience", "timeout"), Set.of());
        String address = Main.spiffeAddress(Main.socket(cmd, args));
        String audience = args.get("audience", "db");
        String wrongAudience = "not-" + audience;
        long timeout = args.seconds("timeout", 30);
        Main.watchdog(cmd, timeout);
        // Two sources wait for their first update one after the other: each gets a third.
        Duration sourceTimeout = Duration.ofSeconds(Math.max(1, timeout / 3));

        Map<String, Object> doc = Json.obj();
        doc.put("client", "java-spiffe");
        doc.put("socket", address);
        List<String> failures = new ArrayList<>();

        WorkloadApiClient client = DefaultWorkloadApiClient.newClient(
                DefaultWorkloadApiClient.ClientOptions.builder().spiffeSocketPath(address).build());
        try {
            X509Context x509 = Main.step(doc, failures, "x509_context", client::fetchX509Context);
            if (x509 != null) {
                List<Object> svids = new ArrayList<>();
                for (X509Svid svid : x509.getX509Svids()) {
                    Map<String, Object> s = Json.obj();
                    s.put("spiffe_id", svid.getSpiffeId().toString());
                    s.put("chain_len", svid.getChain().size());
                    s.put("hint", svid.getHint());
                    svids.add(s);
                }
                doc.put("x509_svids", svids);
                doc.put("x509_default_svid", x509.getDefaultSvid().getSpiffeId().toString());
                Map<String, Object> bundles = new TreeMap<>();
                for (Map.Entry<TrustDomain, X509Bundle> e : x509.getX509BundleSet().getBundles().entrySet()) {
                    bundles.put(e.getKey().getName(), e.getValue().getX509Authorities().size());
                }
                doc.put("x509_bundles", bundles);
                Boolean verified = Main.step(doc, failures, "x509_verify", () -> {
                    X509SvidValidator.verifyChain(x509.getDefaultSvid().getChain(), x509.getX509BundleSet());
                    return true;
                });
                if (verified != null) {
                    doc.put("x509_verified", true);
                }
            }

            String sourceId = Main.step(doc, failures, "x509_source", () -> {
                try (DefaultX509Source source = DefaultX509Source.newSource(DefaultX509Source.X509SourceOptions.builder()
                        .spiffeSocketPath(address)
                        .initTimeout(sourceTimeout)
                        .build())) {
                    return source.getX509Svid().getSpiffeId().toString();
                }
            });
            if (sourceId != null) {
                doc.put("x509_source_svid", sourceId);
            }

            JwtSvid jwt = Main.step(doc, failures, "jwt_svid", () -> client.fetchJwtSvid(audience));
            if (jwt != null) {
                Map<String, Object> j = Json.obj();
                j.put("spiffe_id", jwt.getSpiffeId().toString());
                j.put("audience", new ArrayList<>(new TreeSet<>(jwt.getAudience())));
                j.put("expiry", jwt.getExpiry().toInstant().getEpochSecond());
                j.put("hint", jwt.getHint());
                doc.put("jwt_svid", j);

                JwtSvid byApi = Main.step(doc, failures, "validated_by_api", () -> client.validateJwtSvid(jwt.getToken(), audience));
                if (byApi != null) {
                    doc.put("validated_by_api", byApi.getSpiffeId().toString());
                }
            }

            JwtBundleSet jwtBundles = Main.step(doc, failures, "jwt_bundles", client::fetchJwtBundles);
            if (jwtBundles != null) {
                Map<String, Object> keys = new TreeMap<>();
                for (Map.Entry<TrustDomain, JwtBundle> e : jwtBundles.getBundles().entrySet()) {
                    keys.put(e.getKey().getName(), e.getValue().getJwtAuthorities().size());
                }
                doc.put("jwt_bundles", keys);
            }

            if (jwt != null && jwtBundles != null) {
                JwtSvid offline = Main.step(doc, failures, "validated_offline",
                        () -> JwtSvid.parseAndValidate(jwt.getToken(), jwtBundles, Set.of(audience)));
                if (offline != null) {
                    doc.put("validated_offline", offline.getSpiffeId().toString());
                }
                doc.put("wrong_audience_offline", mustFail(failures, "wrong_audience_offline",
                        () -> JwtSvid.parseAndValidate(jwt.getToken(), jwtBundles, Set.of(wrongAudience))));
            }
            if (jwt != null) {
                doc.put("wrong_audience_api", mustFail(failures, "wrong_audience_api",
                        () -> client.validateJwtSvid(jwt.getToken(), wrongAudience)));
            }

            String jwtSourceId = Main.step(doc, failures, "jwt_source", () -> {
                try (JwtSource source = DefaultJwtSource.newSource(JwtSourceOptions.builder()
                        .spiffeSocketPath(address)
                        .initTimeout(sourceTimeout)
                        .build())) {
                    JwtSvid svid = source.fetchJwtSvid(audience);
                    // The source is also a JWT bundle source: validate against it offline.
                    return JwtSvid.parseAndValidate(svid.getToken(), source, Set.of(audience)).getSpiffeId().toString();
                }
            });
            if (jwtSourceId != null) {
                doc.put("jwt_source_svid", jwtSourceId);
            }
        } finally {
            client.close();
        }
        Main.emit(doc);
        if (!failures.isEmpty()) {
            throw new IllegalStateException(String.join("; ", failures));
        }
    }

    /** Runs a check that must throw: {"rejected": true, "error": ...}, or a failure if it did not. */
    private static Map<String, Object> mustFail(List<String> failures, String name, java.util.concurrent.Callable<?> body) {
        Map<String, Object> out = Json.obj();
        try {
            body.call();
            out.put("rejected", false);
            failures.add(name + ": accepted, but must be refused");
        } catch (Exception e) {
            out.put("rejected", true);
            out.put("error", Main.describe(e));
        }
        return out;
    }

    /** java-spiffe-provider's SSLContext on the source's SVID, accepting -accept-id peers or -accept-any. */
    static SSLContext sslContext(String cmd, Args args, DefaultX509Source source) throws Exception {
        List<String> ids = args.all("accept-id");
        boolean any = args.flag("accept-any");
        if (ids.isEmpty() == !any) {
            throw new Args.UsageException(cmd + ": exactly one of -accept-id and -accept-any is needed");
        }
        SslContextOptions.SslContextOptionsBuilder options = SslContextOptions.builder().x509Source(source);
        String tls = args.get("tls", null);
        if (tls != null) {
            options.sslProtocol(tls);
        }
        if (any) {
            options.acceptAnySpiffeId();
        } else {
            Set<SpiffeId> accepted = new HashSet<>();
            for (String id : ids) {
                accepted.add(SpiffeId.parse(id));
            }
            options.acceptedSpiffeIdsSupplier(() -> accepted);
        }
        return SpiffeSslContextFactory.getSslContext(options.build());
    }

    static DefaultX509Source x509Source(String address, long timeout) throws Exception {
        return DefaultX509Source.newSource(DefaultX509Source.X509SourceOptions.builder()
                .spiffeSocketPath(address)
                .initTimeout(Duration.ofSeconds(timeout))
                .build());
    }

    /** The peer's SPIFFE ID: the spiffe:// URI SAN of its leaf certificate. */
    static String peerId(SSLSession session) throws Exception {
        Certificate[] chain = session.getPeerCertificates();
        for (String uri : GrpcJava.uriSans((X509Certificate) chain[0])) {
            if (uri.startsWith("spiffe://")) {
                return uri;
            }
        }
        throw new IllegalStateException("peer certificate has no spiffe:// URI SAN");
    }

    /**
     * spiffe-mtls-server: mTLS on an SSLServerSocket from java-spiffe-provider's SSLContext, client
     * certificates required. Prints {"listening": "HOST:PORT"}, then per connection {"served":
     * PEER_ID, ...} or {"refused": ERROR}; each connection's first line is answered with
     * "LINE from java". Runs until killed, or until -count connections were handled.
     */
    static void mtlsServer(String[] argv) throws Exception {
        String cmd = "spiffe-mtls-server";
        Args args = new Args(cmd, argv, 1, Set.of("socket", "listen", "accept-id", "tls", "count", "timeout"), Set.of("accept-any"));
        String address = Main.spiffeAddress(Main.socket(cmd, args));
        String listen = args.get("listen", "127.0.0.1:0");
        long timeout = args.seconds("timeout", 30);
        int count = Integer.parseInt(args.get("count", "0"));
        int colon = listen.lastIndexOf(':');
        if (colon < 0) {
            throw new Args.UsageException(cmd + ": -listen must be HOST:PORT");
        }
        String host = listen.substring(0, colon).replace("[", "").replace("]", "");
        int port = Integer.parseInt(listen.substring(colon + 1));

        Thread dog = Main.watchdog(cmd, timeout + 5);
        DefaultX509Source source = x509Source(address, timeout);
        SSLContext context = sslContext(cmd, args, source);
        SSLServerSocket server = (SSLServerSocket) context.getServerSocketFactory()
                .createServerSocket(port, 50, InetAddress.getByName(host));
        server.setNeedClientAuth(true);
        dog.interrupt();
        Map<String, Object> listening = Json.obj();
        String shownHost = server.getInetAddress().getHostAddress();
        if (shownHost.contains(":")) {
            shownHost = "[" + shownHost + "]";
        }
        listening.put("listening", shownHost + ":" + server.getLocalPort());
        listening.put("own_id", source.getX509Svid().getSpiffeId().toString());
        Main.emit(listening);

        // With -count N the server ends once N connections were handled; without, it runs until killed.
        CountDownLatch done = new CountDownLatch(count > 0 ? count : 1);
        AtomicInteger accepted = new AtomicInteger();
        while (!server.isClosed() && (count <= 0 || accepted.get() < count)) {
            SSLSocket socket;
            try {
                socket = (SSLSocket) server.accept();
            } catch (Exception e) {
                if (server.isClosed()) {
                    break;
                }
                Map<String, Object> d = Json.obj();
                d.put("refused", "accept: " + Main.describe(e));
                Main.emit(d);
                Thread.sleep(100);
                continue;
            }
            accepted.incrementAndGet();
            Thread t = new Thread(() -> {
                try {
                    serveOne(socket);
                } finally {
                    done.countDown();
                }
            }, "conn");
            t.setDaemon(true);
            t.start();
        }
        done.await();
        server.close();
        source.close();
    }

    private static void serveOne(SSLSocket socket) {
        Map<String, Object> d = Json.obj();
        try (socket) {
            socket.setSoTimeout(30_000);
            // The handshake (and the trust manager's check of the client's SPIFFE ID) runs here.
            socket.startHandshake();
            SSLSession session = socket.getSession();
            String peer = peerId(session);
            BufferedReader in = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
            String line = in.readLine();
            if (line == null) {
                throw new IllegalStateException("peer " + peer + " closed the connection before sending a line");
            }
            OutputStream out = socket.getOutputStream();
            out.write((line.trim() + " from java\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            d.put("served", peer);
            d.put("line", line.trim());
            d.put("protocol", session.getProtocol());
        } catch (Exception e) {
            d.clear();
            d.put("refused", Main.describe(e));
        }
        Main.emit(d);
    }

    /**
     * spiffe-mtls-client: dials with java-spiffe-provider's SSLContext, sends "ping" and prints
     * {"peer": SERVER_ID, "reply": LINE}. A refused server is an error (exit 1).
     */
    static void mtlsClient(String[] argv) throws Exception {
        String cmd = "spiffe-mtls-client";
        Args args = new Args(cmd, argv, 1, Set.of("socket", "connect", "accept-id", "tls", "timeout"), Set.of("accept-any"));
        String address = Main.spiffeAddress(Main.socket(cmd, args));
        String connect = args.require(cmd, "connect");
        long timeout = args.seconds("timeout", 30);
        int colon = connect.lastIndexOf(':');
        if (colon < 0) {
            throw new Args.UsageException(cmd + ": -connect must be HOST:PORT");
        }
        String host = connect.substring(0, colon).replace("[", "").replace("]", "");
        int port = Integer.parseInt(connect.substring(colon + 1));
        Main.watchdog(cmd, timeout + 5);

        try (DefaultX509Source source = x509Source(address, timeout)) {
            SSLContext context = sslContext(cmd, args, source);
            try (SSLSocket socket = (SSLSocket) context.getSocketFactory().createSocket(host, port)) {
                socket.setSoTimeout((int) Math.min(Integer.MAX_VALUE, timeout * 1000));
                socket.startHandshake();
                SSLSession session = socket.getSession();
                String peer = peerId(session);
                OutputStream out = socket.getOutputStream();
                out.write("ping\n".getBytes(StandardCharsets.UTF_8));
                out.flush();
                BufferedReader in = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
                String reply = in.readLine();
                if (reply == null) {
                    throw new IllegalStateException("server " + peer + " closed the connection without a reply");
                }
                Map<String, Object> d = Json.obj();
                d.put("peer", peer);
                d.put("reply", reply.trim());
                d.put("own_id", source.getX509Svid().getSpiffeId().toString());
                d.put("protocol", session.getProtocol());
                Main.emit(d);
            }
        }
    }
}
