package sigil.javaworkload;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Go-style flags: {@code -name value}, {@code --name value} or {@code -name=value}; a flag named in
 * {@code booleans} takes no value. A flag may repeat ({@link #all}).
 */
final class Args {
    private final Map<String, List<String>> values = new HashMap<>();
    private final Set<String> known;

    Args(String command, String[] argv, int from, Set<String> withValue, Set<String> booleans) {
        known = new java.util.HashSet<>(withValue);
        known.addAll(booleans);
        for (int i = from; i < argv.length; i++) {
            String arg = argv[i];
            if (!arg.startsWith("-") || arg.equals("-") || arg.equals("--")) {
                throw new UsageException(command + ": unexpected argument " + arg);
            }
            String name = arg.startsWith("--") ? arg.substring(2) : arg.substring(1);
            String value = null;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            }
            if (booleans.contains(name)) {
                values.computeIfAbsent(name, k -> new ArrayList<>()).add(value == null ? "true" : value);
            } else if (withValue.contains(name)) {
                if (value == null) {
                    if (i + 1 >= argv.length) {
                        throw new UsageException(command + ": flag -" + name + " needs a value");
                    }
                    value = argv[++i];
                }
                values.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
            } else {
                throw new UsageException(command + ": unknown flag -" + name
                        + " (known: " + String.join(", ", new java.util.TreeSet<>(known)) + ")");
            }
        }
    }

    String get(String name, String fallback) {
        List<String> v = values.get(name);
        return v == null || v.isEmpty() ? fallback : v.get(v.size() - 1);
    }

    String require(String command, String name) {
        String v = get(name, null);
        if (v == null || v.isEmpty()) {
            throw new UsageException(command + ": flag -" + name + " is required");
        }
        return v;
    }

    boolean flag(String name) {
        return Boolean.parseBoolean(get(name, "false"));
    }

    /** Every value of a repeatable flag, each also split at commas. */
    List<String> all(String name) {
        List<String> out = new ArrayList<>();
        for (String v : values.getOrDefault(name, List.of())) {
            for (String part : v.split(",")) {
                if (!part.isBlank()) {
                    out.add(part.trim());
                }
            }
        }
        return out;
    }

    long seconds(String name, long fallback) {
        String v = get(name, null);
        if (v == null) {
            return fallback;
        }
        String s = v.endsWith("s") ? v.substring(0, v.length() - 1) : v;
        try {
            return Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw new UsageException("flag -" + name + ": not a number of seconds: " + v);
        }
    }

    static final class UsageException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }
}
