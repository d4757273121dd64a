package io.twinengine.bench.kstreams;

import com.google.protobuf.InvalidProtocolBufferException;
import io.twinengine.bench.kstreams.proto.PeerTwin;
import io.twinengine.bench.kstreams.proto.Scalar;
import io.twinengine.v1.Envelope;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * The Kafka Streams peer: telemetry + lifecycle topics -> per-product KTable "twins" (default
 * RocksDB store, changelogged). Runs until it has processed N input records, prints the rate,
 * closes cleanly, deletes its local state (and, unless told otherwise, its internal topics and
 * consumer group), then prints one JSON line.
 */
public final class PeerApp {
  static final String STORE = "twins";

  public static void main(String[] argv) throws Exception {
    Options o = Options.parse(argv);
    System.exit(run(o));
  }

  // ---- Options ---------------------------------------------------------------

  static final class Options {
    String bootstrap = "127.0.0.1:9092";
    String telemetry = "twin.telemetry";
    String lifecycle = "twin.lifecycle";
    String appId = "twin-kstreams-peer-" + ProcessHandle.current().pid() + "-" + System.currentTimeMillis();
    int threads = 1;
    long events = 0; // 0: every record in the topics now (end - start offsets)
    long timeoutS = 1800;
    Path stateDir;
    boolean keepInternal = false;
    Path dump;
    boolean quiet = false;
    List<String> extra = new ArrayList<>(); // --set key=value: any StreamsConfig property

    static Options parse(String[] a) {
      Options o = new Options();
      for (int i = 0; i < a.length; i++) {
        String k = a[i];
        String val = i + 1 < a.length ? a[i + 1] : null;
        switch (k) {
          case "--bootstrap":
            o.bootstrap = need(k, val);
            i++;
            break;
          case "--telemetry-topic":
            o.telemetry = need(k, val);
            i++;
            break;
          case "--lifecycle-topic":
            o.lifecycle = need(k, val);
            i++;
            break;
          case "--application-id":
            o.appId = need(k, val);
            i++;
            break;
          case "--threads":
            o.threads = Integer.parseInt(need(k, val));
            i++;
            break;
          case "--events":
            o.events = Long.parseLong(need(k, val));
            i++;
            break;
          case "--timeout-s":
            o.timeoutS = Long.parseLong(need(k, val));
            i++;
            break;
          case "--state-dir":
            o.stateDir = Path.of(need(k, val));
            i++;
            break;
          case "--dump":
            o.dump = Path.of(need(k, val));
            i++;
            break;
          case "--set":
            o.extra.add(need(k, val));
            i++;
            break;
          case "--keep-internal-topics":
            o.keepInternal = true;
            break;
          case "--quiet":
            o.quiet = true;
            break;
          case "--help":
            System.out.println(
                "usage: PeerApp [--bootstrap B] [--telemetry-topic T] [--lifecycle-topic L]\n"
                    + "       [--application-id ID] [--threads 1|2] [--events N (0 = all now in the topics)]\n"
                    + "       [--timeout-s S] [--state-dir DIR] [--dump FILE.jsonl] [--set streams.key=value]...\n"
                    + "       [--keep-internal-topics] [--quiet]");
            System.exit(0);
            break;
          default:
            throw new IllegalArgumentException("unknown option " + k + " (see --help)");
        }
      }
      if (o.threads < 1) throw new IllegalArgumentException("--threads must be >= 1");
      return o;
    }

    private static String need(String k, String v) {
      if (v == null) throw new IllegalArgumentException(k + " needs a value");
      return v;
    }
  }

  // ---- Serdes ----------------------------------------------------------------

  /** Protobuf serde for the aggregate: every store read parses, every store write serializes. */
  static final Serde<PeerTwin> TWIN_SERDE =
      Serdes.serdeFrom(
          (Serializer<PeerTwin>) (topic, t) -> t == null ? null : t.toByteArray(),
          (Deserializer<PeerTwin>)
              (topic, b) -> {
                if (b == null) return null;
                try {
                  return PeerTwin.parseFrom(b);
                } catch (InvalidProtocolBufferException e) {
                  throw new org.apache.kafka.common.errors.SerializationException(e);
                }
              });

  /** Only used if Streams ever had to repartition (it does not: the key is kept). */
  static final Serde<Envelope> ENVELOPE_SERDE =
      Serdes.serdeFrom(
          (Serializer<Envelope>) (topic, e) -> e == null ? null : e.toByteArray(),
          (Deserializer<Envelope>)
              (topic, b) -> {
                if (b == null) return null;
                try {
                  return Envelope.parseFrom(b);
                } catch (InvalidProtocolBufferException e) {
                  throw new org.apache.kafka.common.errors.SerializationException(e);
                }
              });

  // ---- Progress --------------------------------------------------------------

  /** Counts processed input records across stream threads; stamps 10 % and 100 % of N. */
  static final class Progress {
    final long n, n10;
    final AtomicLong count = new AtomicLong();
    final AtomicLong bad = new AtomicLong();
    volatile long tFirst, t10, tN;
    final CountDownLatch done = new CountDownLatch(1);

    Progress(long n) {
      this.n = n;
      this.n10 = Math.max(1, n / 10);
    }

    void record() {
      long c = count.incrementAndGet();
      if (c == 1) tFirst = System.nanoTime();
      if (c == n10) t10 = System.nanoTime();
      if (c == n) {
        tN = System.nanoTime();
        done.countDown();
      }
    }
  }

  static Topology topology(Options o, Progress p) {
    StreamsBuilder builder = new StreamsBuilder();
    // Co-partitioned topics merged into one source; default (byte[]) serdes.
    builder.<byte[], byte[]>stream(List.of(o.telemetry, o.lifecycle))
        .mapValues(
            bytes -> {
              try {
                return Envelope.parseFrom(bytes);
              } catch (InvalidProtocolBufferException | NullPointerException e) {
                p.bad.incrementAndGet();
                p.record();
                return null;
              }
            })
        .filter((k, env) -> env != null)
        .groupByKey(Grouped.with(Serdes.ByteArray(), ENVELOPE_SERDE))
        .aggregate(
            PeerTwin::getDefaultInstance,
            (key, env, twin) -> {
              PeerTwin next = TwinAggregator.apply(twin, env);
              p.record();
              return next;
            },
            Materialized.<byte[], PeerTwin, KeyValueStore<Bytes, byte[]>>as(STORE)
                .withKeySerde(Serdes.ByteArray())
                .withValueSerde(TWIN_SERDE));
    return builder.build();
  }

  // ---- Run -------------------------------------------------------------------

  static int run(Options o) throws Exception {
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, o.appId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.bootstrap);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.threads);
    props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    for (String kv : o.extra) {
      int eq = kv.indexOf('=');
      if (eq <= 0) throw new IllegalArgumentException("--set wants key=value, got " + kv);
      props.put(kv.substring(0, eq), kv.substring(eq + 1));
    }
    StreamsConfig effective = new StreamsConfig(props);

    long n = o.events;
    try {
      if (n <= 0) n = Topics.countRecords(o.bootstrap, List.of(o.telemetry, o.lifecycle));
    } catch (java.util.concurrent.ExecutionException e) {
      System.err.println("peer: error: cannot read the input topics' offsets: " + e.getCause());
      return 2;
    }
    if (n <= 0) {
      System.err.println("peer: the input topics hold no records");
      return 2;
    }
    boolean ownStateDir = o.stateDir == null;
    if (ownStateDir) o.stateDir = Files.createTempDirectory("kstreams-peer-");
    props.put(StreamsConfig.STATE_DIR_CONFIG, o.stateDir.toString());
    Progress p = new Progress(n);
    Topology topo = topology(o, p);
    if (!o.quiet) System.err.println("peer: topology\n" + topo.describe());

    KafkaStreams streams = new KafkaStreams(topo, props);
    AtomicReference<Throwable> failure = new AtomicReference<>();
    CountDownLatch failed = new CountDownLatch(1);
    streams.setUncaughtExceptionHandler(
        e -> {
          failure.compareAndSet(null, e);
          failed.countDown();
          p.done.countDown();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.ERROR) {
            failure.compareAndSet(null, new IllegalStateException("Kafka Streams went to ERROR"));
            p.done.countDown();
          }
        });

    long jvmMs = uptimeMs();
    long cpu0 = cpuNs();
    long t0 = System.nanoTime();
    streams.start();
    long deadline = t0 + TimeUnit.SECONDS.toNanos(o.timeoutS);
    long lastCount = 0, lastT = t0;
    while (!p.done.await(5, TimeUnit.SECONDS)) {
      long now = System.nanoTime(), c = p.count.get();
      if (!o.quiet)
        System.err.printf(
            "peer: progress processed=%d/%d rate=%.0f/s state=%s%n",
            c, n, (c - lastCount) / ((now - lastT) / 1e9), streams.state());
      lastCount = c;
      lastT = now;
      if (now > deadline) {
        failure.compareAndSet(
            null, new IllegalStateException("timeout: " + c + " of " + n + " records after " + o.timeoutS + " s"));
        break;
      }
    }
    long cpuRun = cpuNs() - cpu0; // process CPU (all threads) from start() to here
    boolean ok = failure.get() == null && p.tN != 0;

    long elapsedNs = ok ? p.tN - t0 : System.nanoTime() - t0;
    double rate = ok ? n / (elapsedNs / 1e9) : 0;
    double steady = ok && p.tN > p.t10 ? (n - p.n10) / ((p.tN - p.t10) / 1e9) : 0;
    long firstMs = p.tFirst == 0 ? -1 : (p.tFirst - t0) / 1_000_000;
    if (ok)
      System.out.printf(
          "processed=%d elapsed_ms=%d events_per_s=%.0f steady_events_per_s=%.0f first_record_ms=%d bad=%d%n",
          n, elapsedNs / 1_000_000, rate, steady, firstMs, p.bad.get());
    else System.err.println("peer: error: " + failure.get());

    long dumped = -1;
    if (ok && o.dump != null) dumped = dump(streams, o.dump);

    long c0 = System.nanoTime();
    boolean closed = streams.close(Duration.ofSeconds(120));
    long closeMs = (System.nanoTime() - c0) / 1_000_000;
    if (!closed) System.err.println("peer: warning: Kafka Streams did not close within 120 s");
    streams.cleanUp(); // deletes this application's local state (RocksDB) directory
    if (ownStateDir) deleteTree(o.stateDir);
    if (!o.keepInternal) deleteInternal(o);

    long rss = peakRssKb();
    StringBuilder j = new StringBuilder();
    j.append("{\"peer\":\"kafka-streams\"")
        .append(",\"ok\":").append(ok)
        .append(",\"threads\":").append(o.threads)
        .append(",\"events\":").append(ok ? n : p.count.get())
        .append(",\"elapsed_ms\":").append(elapsedNs / 1_000_000)
        .append(",\"events_per_s\":").append(Math.round(rate))
        .append(",\"steady_events_per_s\":").append(Math.round(steady))
        .append(",\"peak_rss_kb\":").append(rss)
        .append(",\"cpu_ms\":").append(cpuRun / 1_000_000)
        .append(",\"events_per_cpu_s\":").append(ok && cpuRun > 0 ? Math.round(n / (cpuRun / 1e9)) : 0)
        .append(",\"first_record_ms\":").append(firstMs)
        .append(",\"close_ms\":").append(closeMs)
        .append(",\"jvm_to_start_ms\":").append(jvmMs)
        .append(",\"bad_records\":").append(p.bad.get())
        .append(",\"kafka_streams\":\"").append(AppInfoParser.getVersion()).append('"')
        .append(",\"processing_guarantee\":\"")
        .append(effective.getString(StreamsConfig.PROCESSING_GUARANTEE_CONFIG)).append('"')
        .append(",\"commit_interval_ms\":")
        .append(effective.getLong(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG))
        .append(",\"cache_max_bytes\":")
        .append(effective.getLong(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG))
        .append(",\"heap_max_mb\":").append(Runtime.getRuntime().maxMemory() >> 20)
        .append(",\"application_id\":\"").append(o.appId).append('"');
    if (dumped >= 0) j.append(",\"dumped_twins\":").append(dumped);
    j.append('}');
    System.out.println(j);
    return ok ? 0 : 1;
  }

  // ---- After the run ---------------------------------------------------------

  /** Writes the final KTable as JSON lines (fields comparable to twin-sim --truth). */
  static long dump(KafkaStreams streams, Path file) throws IOException {
    ReadOnlyKeyValueStore<byte[], PeerTwin> store =
        streams.store(StoreQueryParameters.fromNameAndType(STORE, QueryableStoreTypes.keyValueStore()));
    long k = 0;
    try (BufferedWriter w = Files.newBufferedWriter(file, StandardCharsets.UTF_8);
        KeyValueIterator<byte[], PeerTwin> it = store.all()) {
      while (it.hasNext()) {
        KeyValue<byte[], PeerTwin> kv = it.next();
        PeerTwin t = kv.value;
        StringBuilder s = new StringBuilder(256);
        s.append("{\"product_id\":").append(Json.str(new String(kv.key, StandardCharsets.UTF_8)));
        s.append(",\"accepted\":").append(t.getTelemetry() + t.getLifecycle());
        s.append(",\"telemetry\":").append(t.getTelemetry());
        s.append(",\"lifecycle\":").append(t.getLifecycle());
        s.append(",\"duplicates\":").append(t.getDuplicates());
        s.append(",\"rejected\":").append(t.getRejected());
        s.append(",\"stage\":").append(Json.str(t.getStage().name()));
        s.append(",\"owner\":").append(t.getOwner().isEmpty() ? "null" : Json.str(t.getOwner()));
        s.append(",\"open_recalls\":").append(Json.strs(t.getOpenRecallsList()));
        s.append(",\"odometer_km\":").append(t.hasOdometerKm() ? Json.num(t.getOdometerKm().getValue()) : "null");
        if (t.hasBrakePadMm() && t.getBrakePadMm().getVCount() > 0) {
          double m = Double.MAX_VALUE;
          for (double d : t.getBrakePadMm().getVList()) m = Math.min(m, d);
          s.append(",\"min_brake_pad_mm\":").append(Json.num(m));
        } else s.append(",\"min_brake_pad_mm\":null");
        s.append(",\"dtc_codes\":").append(t.hasDtcCodes() ? Json.strs(t.getDtcCodes().getVList()) : "null");
        s.append(",\"last_service_work_order\":")
            .append(t.getLastServiceWorkOrder().isEmpty() ? "null" : Json.str(t.getLastServiceWorkOrder()));
        s.append(",\"sources\":{");
        boolean first = true;
        for (Map.Entry<String, Long> e : new java.util.TreeMap<>(t.getSourceHwmMap()).entrySet()) {
          if (!first) s.append(',');
          first = false;
          s.append(Json.str(e.getKey())).append(':').append(Long.toUnsignedString(e.getValue()));
        }
        s.append("},\"metrics\":{");
        first = true;
        for (Map.Entry<String, Scalar> e : new java.util.TreeMap<>(t.getMetricsMap()).entrySet()) {
          if (!first) s.append(',');
          first = false;
          s.append(Json.str(e.getKey())).append(':').append(Json.num(e.getValue().getValue()));
        }
        s.append("}}\n");
        w.write(s.toString());
        k++;
      }
    } catch (UncheckedIOException e) {
      throw e.getCause();
    }
    return k;
  }

  /** Deletes the changelog topic and the consumer group this run created (unique per run). */
  static void deleteInternal(Options o) {
    Properties ap = new Properties();
    ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, o.bootstrap);
    try (Admin admin = Admin.create(ap)) {
      List<String> internal = new ArrayList<>();
      for (String t : admin.listTopics().names().get(30, TimeUnit.SECONDS))
        if (t.startsWith(o.appId + "-") && (t.endsWith("-changelog") || t.endsWith("-repartition")))
          internal.add(t);
      if (!internal.isEmpty()) admin.deleteTopics(internal).all().get(60, TimeUnit.SECONDS);
      // Streams' consumers do not send LeaveGroup on close; remove the (departed) members so the
      // group can be deleted now rather than after the session timeout.
      try {
        admin
            .removeMembersFromConsumerGroup(o.appId, new RemoveMembersFromConsumerGroupOptions())
            .all()
            .get(30, TimeUnit.SECONDS);
      } catch (java.util.concurrent.ExecutionException e) {
        // no members left
      }
      admin.deleteConsumerGroups(List.of(o.appId)).all().get(60, TimeUnit.SECONDS);
      if (!o.quiet) System.err.println("peer: deleted internal topics " + internal + " and group " + o.appId);
    } catch (Exception e) {
      System.err.println("peer: warning: could not delete internal topics/group of " + o.appId + ": " + e);
    }
  }

  static void deleteTree(Path p) throws IOException {
    if (!Files.exists(p)) return;
    try (var s = Files.walk(p)) {
      s.sorted(java.util.Comparator.reverseOrder()).forEach(x -> x.toFile().delete());
    }
  }

  /** Peak resident set size of this process (VmHWM), kB; -1 if unknown. */
  static long peakRssKb() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (line.startsWith("VmHWM:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
      }
    } catch (IOException | NumberFormatException e) {
      // fall through
    }
    return -1;
  }

  /** CPU time of the whole process (every thread: stream threads, GC, JIT, RocksDB), ns. */
  static long cpuNs() {
    var os = ManagementFactory.getOperatingSystemMXBean();
    if (os instanceof com.sun.management.OperatingSystemMXBean)
      return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime();
    return 0;
  }

  /** JVM uptime: the time from JVM launch to streams.start() is reported apart. */
  static long uptimeMs() {
    return ManagementFactory.getRuntimeMXBean().getUptime();
  }
}
