package sigil.javaworkload;

import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.StatusRuntimeException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.logging.ConsoleHandler;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;

/**
 * java-workload: a SPIFFE workload written in Java for Sigil's end-to-end tests, which run it as a
 * child process ({@code java -jar target/java-workload.jar SUBCOMMAND [flags]}). Each subcommand
 * reports on stdout, one JSON document per line. A failure is one JSON document on stderr,
 * {"error": ..., "command": ..., "grpc_code": ..., "grpc_description": ...}, with exit status 1;
 * a usage mistake exits 64.
 *
 * <p>Two Workload API clients:
 *
 * <ul>
 *   <li>{@code grpc-fetch}, {@code grpc-health}: stock grpc-java (grpc-netty on unshaded netty with
 *       the epoll transport) dialing the socket as a {@code DomainSocketAddress}, no generated code;
 *       see {@link GrpcJava}.
 *   <li>{@code spiffe-context}, {@code spiffe-mtls-server}, {@code spiffe-mtls-client}: java-spiffe
 *       (io.spiffe:java-spiffe-core and java-spiffe-provider) through its public API only; see
 *       {@link JavaSpiffe}.
 * </ul>
 */
public final class Main {
    private Main() {}

    static final String USAGE = String.join("\n",
            "usage: java -jar java-workload.jar SUBCOMMAND [flags]",
            "  grpc-fetch   -socket PATH [-timeout S] [-authority A] [-no-header]",
            "               plain grpc-java FetchX509SVID, first message",
            "  grpc-health  -socket PATH [-service NAME] [-timeout S] [-authority A]",
            "               plain grpc-java grpc.health.v1.Health/Check",
            "  spiffe-context     -socket unix:PATH [-audience A] [-timeout S]",
            "               java-spiffe: X.509 context, X509Source, JWT-SVID fetch/validate, JWT bundles",
            "  spiffe-mtls-server -socket unix:PATH [-listen HOST:PORT] (-accept-id ID... | -accept-any)",
            "                     [-tls TLSv1.2|TLSv1.3] [-count N]",
            "  spiffe-mtls-client -socket unix:PATH -connect HOST:PORT (-accept-id ID... | -accept-any)",
            "                     [-tls TLSv1.2|TLSv1.3] [-timeout S]",
            "-socket defaults to $SPIFFE_ENDPOINT_SOCKET; a bare path, unix:PATH and unix://PATH are all accepted.");

    public static void main(String[] argv) {
        if (argv.length < 1 || argv[0].equals("-h") || argv[0].equals("--help") || argv[0].equals("help")) {
            System.err.println(USAGE);
            System.exit(argv.length < 1 ? 64 : 0);
        }
        String command = argv[0];
        configureLogging();
        int status;
        try {
            switch (command) {
                case "grpc-fetch" -> GrpcJava.fetch(argv);
                case "grpc-health" -> GrpcJava.health(argv);
                case "spiffe-context" -> JavaSpiffe.context(argv);
                case "spiffe-mtls-server" -> JavaSpiffe.mtlsServer(argv);
                case "spiffe-mtls-client" -> JavaSpiffe.mtlsClient(argv);
                default -> throw new Args.UsageException("unknown subcommand " + command + "\n" + USAGE);
            }
            status = 0;
        } catch (Args.UsageException e) {
            System.err.println("java-workload: " + e.getMessage());
            status = 64;
        } catch (Throwable e) {
            fail(command, e);
            status = 1;
        }
        System.out.flush();
        System.err.flush();
        // grpc and java-spiffe leave non-daemon threads behind: leave without waiting for them.
        System.exit(status);
    }

    /**
     * grpc, netty and java-spiffe log through java.util.logging to stderr. Keep stderr to warnings
     * on one line each, so the error document stays easy to find (it is the last line);
     * JAVA_WORKLOAD_LOG=INFO (or FINE, ...) turns it up. netty's "Unknown channel option
     * 'SO_KEEPALIVE'" warning, which grpc-netty causes on every domain socket channel, is dropped.
     */
    static void configureLogging() {
        Level level;
        try {
            level = Level.parse(System.getenv().getOrDefault("JAVA_WORKLOAD_LOG", "WARNING").toUpperCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            level = Level.WARNING;
        }
        Logger root = Logger.getLogger("");
        for (Handler h : root.getHandlers()) {
            root.removeHandler(h);
        }
        ConsoleHandler handler = new ConsoleHandler();
        handler.setLevel(level);
        handler.setFormatter(new SimpleFormatter() {
            @Override
            public String format(LogRecord r) {
                String thrown = r.getThrown() == null ? "" : " (" + describe(r.getThrown()) + ")";
                return "java-workload log: " + r.getLevel() + " " + r.getLoggerName() + ": " + formatMessage(r) + thrown + "\n";
            }
        });
        root.addHandler(handler);
        root.setLevel(level);
        if (level.intValue() >= Level.WARNING.intValue()) {
            for (Logger l : NETTY_BOOTSTRAP) {
                l.setLevel(Level.SEVERE);
            }
        }
    }

    /** Held so that the level set on it is not garbage-collected away. */
    private static final List<Logger> NETTY_BOOTSTRAP = List.of(
            Logger.getLogger("io.netty.bootstrap"), Logger.getLogger("io.grpc.netty.shaded.io.netty.bootstrap"));

    /** Prints one JSON document on its own line of stdout. */
    static synchronized void emit(Map<String, Object> doc) {
        System.out.println(Json.write(doc));
        System.out.flush();
    }

    /** Prints the error document on stderr. */
    static synchronized void fail(String command, Throwable e) {
        Map<String, Object> doc = Json.obj();
        doc.put("error", describe(e));
        doc.put("command", command);
        Status status = grpcStatus(e);
        if (status != null) {
            doc.put("grpc_code", status.getCode().name());
            doc.put("grpc_description", status.getDescription());
        }
        System.err.println(Json.write(doc));
        System.err.flush();
    }

    /** The messages of an exception and its causes, joined with ": " (repeats left out). */
    static String describe(Throwable e) {
        List<String> parts = new ArrayList<>();
        for (Throwable t = e; t != null && parts.size() < 8; t = t.getCause()) {
            String m = t.getMessage();
            if (m == null || m.isBlank()) {
                m = t.getClass().getSimpleName();
            }
            String last = parts.isEmpty() ? "" : parts.get(parts.size() - 1);
            if (!last.contains(m)) {
                parts.add(m);
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return String.join(": ", parts);
    }

    /** The gRPC status somewhere in an exception's causes, if any. */
    static Status grpcStatus(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof StatusRuntimeException sre) {
                return sre.getStatus();
            }
            if (t instanceof StatusException se) {
                return se.getStatus();
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return null;
    }

    /** The Workload API address: -socket, else $SPIFFE_ENDPOINT_SOCKET. */
    static String socket(String command, Args args) {
        String socket = args.get("socket", System.getenv("SPIFFE_ENDPOINT_SOCKET"));
        if (socket == null || socket.isBlank()) {
            throw new Args.UsageException(command + ": -socket (or SPIFFE_ENDPOINT_SOCKET) is required");
        }
        return socket;
    }

    /** A filesystem path from a bare path, unix:PATH or unix://PATH. */
    static String unixPath(String socket) {
        String path = socket;
        if (path.startsWith("unix://")) {
            path = path.substring("unix://".length());
        } else if (path.startsWith("unix:")) {
            path = path.substring("unix:".length());
        }
        if (path.isEmpty()) {
            throw new Args.UsageException("not a unix socket address: " + socket);
        }
        return path;
    }

    /** The address as java-spiffe wants it: a URI with a unix: or tcp: scheme. */
    static String spiffeAddress(String socket) {
        if (socket.startsWith("unix:") || socket.startsWith("tcp:")) {
            return socket;
        }
        return "unix://" + socket;
    }

    /**
     * Ends the process with an error if {@code seconds} pass before {@link Thread#interrupt} of the
     * returned thread: no client call may hang a test.
     */
    static Thread watchdog(String command, long seconds) {
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(seconds * 1000);
            } catch (InterruptedException e) {
                return;
            }
            fail(command, new RuntimeException("timed out after " + seconds + "s"));
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }, "watchdog");
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** Runs one step; on failure records {@code <name>_error} in {@code doc} and returns null. */
    static <T> T step(Map<String, Object> doc, List<String> failures, String name, Callable<T> body) {
        try {
            return body.call();
        } catch (Exception e) {
            doc.put(name + "_error", describe(e));
            failures.add(name + ": " + describe(e));
            return null;
        }
    }
}
